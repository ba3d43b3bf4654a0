"""Verified claims -> Identity: nationality code forms, US-person status, OIDC4IDA verified_claims."""

from __future__ import annotations

from typing import Any

import pytest

from geofence.identity.claims import ClaimNames, IdentityError, identity_from_claims, nationality_code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        ("DEU", "DE"),
        ("D", "DE"),
        ("GBD", "GB"),
        ("RKS", "XK"),
        ("USA", "US"),
        ("XXA", None),
    ],
)
def test_nationality_codes(value: str, code: str | None) -> None:
    assert nationality_code(value) == code


@pytest.mark.parametrize("value", ["", "ZZZ", "Germany", 276, None, "U S"])
def test_bad_nationality_codes(value: Any) -> None:
    with pytest.raises(IdentityError):
        nationality_code(value)


def test_plain_claims() -> None:
    identity = identity_from_claims(
        {
            "iss": "https://idp",
            "sub": "alice",
            "us_person": False,
            "nationalities": ["DEU", "FR"],
            "residence_country": "US",
        }
    )
    assert identity.us_person is False
    assert identity.nationalities == ("DE", "FR")
    assert identity.residence == "US"
    assert identity.subject_hash is not None and "alice" not in identity.subject_hash
    assert identity.issuer == "https://idp"


@pytest.mark.parametrize(
    ("claims", "us_person"),
    [
        ({"nationalities": ["USA"]}, True),  # US nationality makes a US person
        ({"nationalities": ["DE"], "permanent_residence_country": "US"}, True),  # green card holder
        ({"nationalities": ["DE"]}, False),
        ({}, False),
        ({"nationalities": ["US"], "us_person": False}, False),  # an explicit claim wins
        ({"us_person": True}, True),
    ],
)
def test_us_person_status(claims: dict[str, Any], us_person: bool) -> None:
    assert identity_from_claims(claims).us_person is us_person


def test_oidc4ida_verified_claims_object_and_array() -> None:
    verification = {"trust_framework": "nist_800_63A", "assurance_level": "ial2", "time": "2026-01-02T03:04:05Z"}
    verified = {"verification": verification, "claims": {"nationalities": ["GBR", "SLE"]}}
    for form in (verified, [verified]):
        identity = identity_from_claims({"verified_claims": form, "nationalities": ["US"]})
        assert identity.nationalities == ("GB", "SL")  # verified claims win over the plain claim
        assert identity.us_person is False
        assert (identity.trust_framework, identity.assurance_level) == ("nist_800_63A", "ial2")
        assert identity.verification_time == "2026-01-02T03:04:05Z"


def test_custom_claim_names() -> None:
    names = ClaimNames(us_person="https://example.com/us", nationalities="citizenship")
    identity = identity_from_claims({"https://example.com/us": True, "citizenship": "CA"}, names)
    assert identity.us_person and identity.nationalities == ("CA",)


@pytest.mark.parametrize(
    "claims",
    [
        {"us_person": "yes"},
        {"nationalities": "Germany"},
        {"nationalities": {"DE": True}},
        {"verified_claims": {"no_claims": {}}},
        {"residence_country": "Narnia"},
    ],
)
def test_malformed_claims(claims: dict[str, Any]) -> None:
    with pytest.raises(IdentityError):
        identity_from_claims(claims)


def test_claims_must_be_an_object() -> None:
    with pytest.raises(IdentityError):
        identity_from_claims(["US"])  # type: ignore[arg-type]
