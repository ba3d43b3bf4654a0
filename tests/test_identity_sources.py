"""Which claims decide: only verified_claims elements that meet the requirements, never the top level beside them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from geofence.identity.claims import AssuranceRequirements, Identity, IdentityError, identity_from_claims

NOW = time.time()


def verified(nationalities: list[str], level: str = "ial2", framework: str = "nist_800_63A", **claims: Any) -> Any:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 86400))
    verification = {"trust_framework": framework, "assurance_level": level, "time": when}
    return {"verification": verification, "claims": {"nationalities": nationalities, **claims}}


IAL2 = AssuranceRequirements(min_assurance="ial2")


@pytest.mark.parametrize(
    ("top_level", "expected"),
    [
        ({"us_person": True}, (False, ("DE",), None)),  # a top-level flag never makes a U.S. person
        ({"permanent_residence_country": "US"}, (False, ("DE",), None)),  # nor a top-level green card
        ({"nationalities": ["US"]}, (False, ("DE",), None)),  # nor a top-level nationality
        ({"us_person": False, "nationalities": ["FR"]}, (False, ("DE",), None)),
    ],
)
@pytest.mark.parametrize("form", ["object", "array"])
def test_top_level_claims_never_add_to_or_override_verified_claims(
    top_level: dict[str, Any], expected: tuple[bool, tuple[str, ...], str | None], form: str
) -> None:
    element = verified(["DE"])
    claims = {"verified_claims": element if form == "object" else [element], **top_level}
    for requirements in (None, IAL2):
        identity = identity_from_claims(claims, requirements=requirements, now=NOW)
        assert (identity.us_person, identity.nationalities, identity.permanent_residence) == expected
        assert identity.claims_source == "verified_claims" and identity.verified_elements == (0,)


def test_residence_comes_only_from_verified_claims() -> None:
    claims = {"verified_claims": verified(["DE"], residence_country="DE"), "residence_country": "US",
              "most_recent_country": "US"}  # fmt: skip
    identity = identity_from_claims(claims)
    assert (identity.residence, identity.most_recent_country) == ("DE", None)


def test_an_element_that_fails_the_requirements_contributes_nothing() -> None:
    weak = verified(["US"], level="ial1", us_person=True, permanent_residence_country="US")
    strong = verified(["DE"], level="ial2")
    identity = identity_from_claims({"verified_claims": [weak, strong]}, requirements=IAL2, now=NOW)
    assert (identity.us_person, identity.nationalities, identity.permanent_residence) == (False, ("DE",), None)
    assert identity.verified_elements == (1,) and identity.assurance_level == "ial2"
    # Malformed claims in an element that does not count are not read either.
    junk = {"verification": {"assurance_level": "ial1"}, "claims": {"nationalities": ["Narnia"]}}
    assert identity_from_claims({"verified_claims": [junk, strong]}, requirements=IAL2, now=NOW).nationalities == (
        "DE",
    )


def test_no_element_meets_the_requirements() -> None:
    with pytest.raises(IdentityError, match="assurance level below ial2"):
        identity_from_claims({"verified_claims": verified(["US"], level="ial1")}, requirements=IAL2, now=NOW)
    both = [verified(["US"], level="ial1"), verified(["US"], framework="eidas")]
    requirements = AssuranceRequirements(min_assurance="ial2", trust_frameworks=("nist_800_63A",))
    with pytest.raises(
        IdentityError, match=r"no verified_claims element meets.*\[0\] assurance.*\[1\] trust framework"
    ):
        identity_from_claims({"verified_claims": both}, requirements=requirements, now=NOW)
    with pytest.raises(IdentityError, match="no verified_claims evidence"):
        identity_from_claims({"verified_claims": []}, requirements=IAL2, now=NOW)
    with pytest.raises(IdentityError, match="no verified_claims evidence"):
        identity_from_claims({"us_person": True, "nationalities": ["US"]}, requirements=IAL2, now=NOW)


def test_every_qualifying_element_counts() -> None:
    identity = identity_from_claims({"verified_claims": [verified(["DE"]), verified(["USA"])]})
    assert identity.nationalities == ("DE", "US") and identity.us_person
    assert identity.verified_elements == (0, 1)


def test_empty_verified_claims_state_nothing() -> None:
    identity = identity_from_claims({"verified_claims": [], "us_person": True})
    assert (identity.us_person, identity.nationalities, identity.claims_source) == (False, (), "verified_claims")


def test_top_level_fallback_and_never() -> None:
    plain = {"us_person": True, "nationalities": ["US"]}
    identity = identity_from_claims(plain)  # the default: IdPs without verified_claims keep working
    assert identity.us_person and identity.claims_source == "top_level" and identity.verified_elements == ()
    with pytest.raises(IdentityError, match="top-level claims are not trusted"):
        identity_from_claims(plain, top_level="never")
    assert identity_from_claims({"verified_claims": verified(["US"])}, top_level="never").us_person
    with pytest.raises(ValueError, match="top_level"):
        identity_from_claims(plain, top_level="always")  # type: ignore[arg-type]


def test_where_the_claims_came_from_is_explained() -> None:
    identity = identity_from_claims({"verified_claims": [verified(["DE"], level="ial1"), verified(["DE"])]},
                                    requirements=IAL2, now=NOW)  # fmt: skip
    assert identity.describe_source().startswith("verified_claims [1] (nist_800_63A, ial2, verified ")
    assert identity.as_dict()["claims_source"] == "verified_claims"
    assert identity.as_dict()["verified_elements"] == [1]
    assert (
        identity_from_claims({"us_person": False}).describe_source()
        == "top-level claims (no verified_claims in the token)"
    )


def test_expiry_is_not_a_fact_about_the_person() -> None:
    a = Identity(us_person=True, nationalities=("US",), expires=1_900_000_000.0)
    b = Identity(us_person=True, nationalities=("US",), expires=None)
    assert a == b and "expires" not in a.as_dict()
    assert a.describe_source().endswith("token expires 2030-03-17T17:46:40Z")
