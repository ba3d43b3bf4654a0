"""Verified identity claims -> :class:`Identity`.

Claims arrive already verified (a signed token checked elsewhere, or an app's own authentication). This module
only reads them: US-person status, nationalities (ISO alpha-2 / alpha-3 or ICAO 9303 codes, as OpenID Connect
for Identity Assurance allows, normalised to alpha-2) and residence. OIDC4IDA ``verified_claims`` may be an
object or an array of them; nationalities found there take precedence over a plain top-level claim.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pycountry

from .destinations import is_country
from .errors import GeofenceError

__all__ = ["ClaimNames", "Identity", "IdentityError", "identity_from_claims", "nationality_code"]


class IdentityError(GeofenceError):
    """Claims that cannot be read as an identity (a malformed nationality, a non-boolean US-person flag...)."""


# ICAO Doc 9303 codes that differ from ISO 3166-1 alpha-3.
_ICAO: Final = {"D": "DE", "GBD": "GB", "GBN": "GB", "GBO": "GB", "GBP": "GB", "GBS": "GB", "RKS": "XK"}
# ICAO codes that name no nationality (stateless, refugee, unspecified, UN staff): they never satisfy a rule.
_NO_NATIONALITY: Final = frozenset({"XXA", "XXB", "XXC", "XXX", "UNO", "UNA", "UNK", "EUE"})


def nationality_code(value: Any) -> str | None:
    """Alpha-2 code for an alpha-2, alpha-3 or ICAO nationality; None for 'stateless'-type codes."""
    if not isinstance(value, str) or not value.strip():
        raise IdentityError(f"nationality {value!r} is not a country code")
    code = value.strip().upper()
    if code in _NO_NATIONALITY:
        return None
    if code in _ICAO:
        return _ICAO[code]
    if len(code) == 2 and is_country(code):
        return code
    if len(code) == 3:
        country = pycountry.countries.get(alpha_3=code)
        if country is not None:
            return str(country.alpha_2)
    raise IdentityError(f"nationality {value!r} is not an ISO 3166-1 or ICAO country code")


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Where to find each fact in the claims (``[identity]`` keys)."""

    us_person: str = "us_person"
    nationalities: str = "nationalities"
    residence: str = "residence_country"
    permanent_residence: str = "permanent_residence_country"
    most_recent_country: str = "most_recent_country"


@dataclass(frozen=True, slots=True)
class Identity:
    """What geofence knows about the caller as a person."""

    us_person: bool
    """U.S. citizen, lawful permanent resident or protected individual (15 CFR 772.1)."""
    nationalities: tuple[str, ...] = ()
    residence: str | None = None
    permanent_residence: str | None = None
    most_recent_country: str | None = None
    """EAR 734.13(b): most recent country of citizenship or permanent residency, when the IdP states it."""
    subject_hash: str | None = None
    """SHA-256 of ``iss`` and ``sub``: enough to correlate audit records, not to identify the person."""
    issuer: str | None = None
    assurance_level: str | None = None
    """From OIDC4IDA ``verified_claims.verification.assurance_level`` (e.g. ``ial2``)."""
    trust_framework: str | None = None
    """From ``verified_claims.verification.trust_framework`` (e.g. ``nist_800_63A``)."""
    verification_time: str | None = None
    """From ``verified_claims.verification.time`` (ISO 8601), as given."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "us_person": self.us_person,
            "nationalities": list(self.nationalities),
            "residence": self.residence,
            "permanent_residence": self.permanent_residence,
            "most_recent_country": self.most_recent_country,
            "subject_hash": self.subject_hash,
            "issuer": self.issuer,
            "assurance_level": self.assurance_level,
            "trust_framework": self.trust_framework,
            "verification_time": self.verification_time,
        }


def _verified_claims(claims: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """The ``claims`` of every OIDC4IDA ``verified_claims`` element, and the first element's ``verification``."""
    raw = claims.get("verified_claims")
    items = raw if isinstance(raw, list) else [raw] if raw is not None else []
    out = []
    verification: Mapping[str, Any] = {}
    for item in items:
        inner = item.get("claims") if isinstance(item, Mapping) else None
        if not isinstance(inner, Mapping):
            raise IdentityError("verified_claims must hold a 'claims' object")
        out.append(inner)
        found = item.get("verification")
        if not verification and isinstance(found, Mapping):
            verification = found
    return out, verification


def _country(value: Any, name: str) -> str | None:
    if value is None:
        return None
    try:
        return nationality_code(value)
    except IdentityError:
        raise IdentityError(f"claim {name!r}: {value!r} is not a country code") from None


def identity_from_claims(claims: Mapping[str, Any], names: ClaimNames = ClaimNames()) -> Identity:
    """Read an :class:`Identity` from verified claims; :class:`IdentityError` if they are malformed."""
    if not isinstance(claims, Mapping):
        raise IdentityError("claims must be a JSON object")
    verified, verification = _verified_claims(claims)
    sources: list[Mapping[str, Any]] = [*verified, claims]
    raw_nationalities: Sequence[Any] | None = None
    for source in sources:
        if names.nationalities in source:
            raw_nationalities = source[names.nationalities]
            break
    if raw_nationalities is None:
        raw_nationalities = []
    if isinstance(raw_nationalities, str):
        raw_nationalities = [raw_nationalities]
    if not isinstance(raw_nationalities, list):
        raise IdentityError(f"claim {names.nationalities!r} must be a list of country codes")
    nationalities: list[str] = []
    for value in raw_nationalities:
        code = nationality_code(value)
        if code is not None and code not in nationalities:
            nationalities.append(code)
    residence = permanent = most_recent = None
    flag: Any = None
    for source in reversed(sources):  # verified_claims override the top level
        residence = _country(source.get(names.residence), names.residence) or residence
        permanent = _country(source.get(names.permanent_residence), names.permanent_residence) or permanent
        most_recent = _country(source.get(names.most_recent_country), names.most_recent_country) or most_recent
        if names.us_person in source:
            flag = source[names.us_person]
    if flag is not None and not isinstance(flag, bool):
        raise IdentityError(f"claim {names.us_person!r} must be true or false, not {flag!r}")
    us_person = flag if flag is not None else ("US" in nationalities or permanent == "US")
    subject = claims.get("sub")
    issuer = claims.get("iss") if isinstance(claims.get("iss"), str) else None
    subject_hash = (
        hashlib.sha256(f"{issuer or ''}\x00{subject}".encode()).hexdigest()[:32] if isinstance(subject, str) else None
    )
    return Identity(
        us_person=us_person,
        nationalities=tuple(nationalities),
        residence=residence,
        permanent_residence=permanent,
        most_recent_country=most_recent,
        subject_hash=subject_hash,
        issuer=issuer,
        assurance_level=_text(verification.get("assurance_level")),
        trust_framework=_text(verification.get("trust_framework")),
        verification_time=_text(verification.get("time")),
    )


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None
