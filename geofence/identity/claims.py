"""Verified identity claims -> :class:`Identity`.

Claims arrive already verified (a signed token checked elsewhere, or an app's own authentication). This module
only reads them: US-person status, nationalities (ISO alpha-2 / alpha-3 or ICAO 9303 codes, as OpenID Connect
for Identity Assurance allows, normalised to alpha-2) and residence.

When the claims carry OIDC4IDA ``verified_claims`` (an object or an array of them), the facts come from those
elements only, and only from the ones whose ``verification`` meets the assurance requirements: an IdP may put
self-asserted profile data at the top level, and a top-level ``us_person: true`` must never turn verified
German nationality into a U.S. person. Top-level claims are read only when there is no ``verified_claims`` at
all, no assurance requirement is set, and the caller allows it (``top_level="fallback"``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import pycountry

from ..errors import GeofenceError
from ..places import is_country

__all__ = [
    "ASSURANCE_LEVELS",
    "TOP_LEVEL_CLAIMS",
    "AssuranceRequirements",
    "ClaimNames",
    "Identity",
    "IdentityError",
    "TopLevelClaims",
    "identity_from_claims",
    "nationality_code",
]


class IdentityError(GeofenceError):
    """Claims that cannot be read as an identity (a malformed nationality, a non-boolean US-person flag...)."""


# ICAO Doc 9303 codes that differ from ISO 3166-1 alpha-3.
_ICAO: Final = {"D": "DE", "GBD": "GB", "GBN": "GB", "GBO": "GB", "GBP": "GB", "GBS": "GB", "RKS": "XK"}
# ICAO codes that name no nationality (stateless, refugee, unspecified, UN staff): they never satisfy a rule.
_NO_NATIONALITY: Final = frozenset({"XXA", "XXB", "XXC", "XXX", "UNO", "UNA", "UNK", "EUE"})
# Ordered scales of assurance levels: NIST SP 800-63A IAL and eIDAS levels of assurance.
ASSURANCE_LEVELS: Final = (("ial1", "ial2", "ial3"), ("low", "substantial", "high"))

TopLevelClaims = Literal["fallback", "never"]
TOP_LEVEL_CLAIMS: Final[tuple[TopLevelClaims, ...]] = ("fallback", "never")


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
class AssuranceRequirements:
    """What a ``verified_claims`` element's ``verification`` must show for its claims to count."""

    min_assurance: str | None = None
    trust_frameworks: tuple[str, ...] = ()
    max_verification_age_days: int | None = None

    @property
    def configured(self) -> bool:
        return bool(self.min_assurance or self.trust_frameworks or self.max_verification_age_days is not None)

    def problem(self, verification: Any, now: float) -> str | None:
        """Why *verification* falls short, or None when it meets every requirement."""
        if not isinstance(verification, Mapping):
            return "verified_claims without verification"
        framework = verification.get("trust_framework")
        if self.trust_frameworks and framework not in self.trust_frameworks:
            return f"trust framework {str(framework)[:40]!r} not accepted"
        if self.min_assurance is not None and not _at_least(verification.get("assurance_level"), self.min_assurance):
            return f"assurance level below {self.min_assurance}"
        if self.max_verification_age_days is not None:
            when = _timestamp(verification.get("time"))
            if when is None:
                return "verification time missing or malformed"
            if now - when > self.max_verification_age_days * 86400:
                return f"identity verified more than {self.max_verification_age_days} days ago"
        return None


@dataclass(frozen=True, slots=True)
class Identity:
    """What geofence knows about the caller as a person, and where each fact came from."""

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
    """From OIDC4IDA ``verified_claims.verification.assurance_level`` (e.g. ``ial2``) of the first element used."""
    trust_framework: str | None = None
    """From ``verified_claims.verification.trust_framework`` (e.g. ``nist_800_63A``) of the first element used."""
    verification_time: str | None = None
    """From ``verified_claims.verification.time`` (ISO 8601) of the first element used, as given."""
    claims_source: Literal["verified_claims", "top_level"] | None = None
    """Where the facts were read: ``verified_claims`` elements or the top-level claims (None: built by hand)."""
    verified_elements: tuple[int, ...] = ()
    """Indexes of the ``verified_claims`` elements whose claims were used (0 for the object form)."""
    expires: float | None = field(default=None, compare=False)
    """The token's ``exp`` (UNIX time), so a long-lived connection can end with it; None when unknown. Not a
    fact about the person: left out of equality and of :meth:`as_dict`."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for decisions and audit records: hashed subject, no token, no ``expires``."""
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
            "claims_source": self.claims_source,
            "verified_elements": list(self.verified_elements),
        }

    def describe_source(self) -> str:
        """Which claims decided, in words (``geofence check`` prints it)."""
        if self.claims_source == "top_level":
            text = "top-level claims (no verified_claims in the token)"
        elif self.claims_source == "verified_claims":
            if not self.verified_elements:
                text = "verified_claims (empty: no verified facts)"
            else:
                used = ", ".join(f"[{i}]" for i in self.verified_elements)
                shown = [v for v in (self.trust_framework, self.assurance_level) if v]
                shown += [f"verified {self.verification_time}"] if self.verification_time else []
                text = f"verified_claims {used}" + (f" ({', '.join(shown)})" if shown else "")
        else:
            text = "given directly (no claims)"
        if self.expires is not None:
            try:
                text += f"; token expires {datetime.fromtimestamp(self.expires, UTC):%Y-%m-%dT%H:%M:%SZ}"
            except (OverflowError, ValueError, OSError):
                text += f"; token expires at {self.expires:.0f}"
        return text


def _elements(raw: Any) -> list[Mapping[str, Any]]:
    """The OIDC4IDA ``verified_claims`` elements: an object, or an array of them, each with a ``claims`` object."""
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("claims"), Mapping):
            raise IdentityError("verified_claims must hold a 'claims' object")
    return items


def _country(value: Any, name: str) -> str | None:
    if value is None:
        return None
    try:
        return nationality_code(value)
    except IdentityError:
        raise IdentityError(f"claim {name!r}: {value!r} is not a country code") from None


def _nationalities(sources: Sequence[Mapping[str, Any]], name: str) -> tuple[str, ...]:
    """Every nationality any source states, in order: each verified element is evidence of a citizenship."""
    out: list[str] = []
    for source in sources:
        raw = source.get(name)
        if raw is None:
            continue
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list):
            raise IdentityError(f"claim {name!r} must be a list of country codes")
        for value in values:
            code = nationality_code(value)
            if code is not None and code not in out:
                out.append(code)
    return tuple(out)


def _first_country(sources: Sequence[Mapping[str, Any]], name: str) -> str | None:
    for source in sources:
        code = _country(source.get(name), name)
        if code is not None:
            return code
    return None


def identity_from_claims(
    claims: Mapping[str, Any],
    names: ClaimNames = ClaimNames(),
    *,
    top_level: TopLevelClaims = "fallback",
    requirements: AssuranceRequirements | None = None,
    now: float | None = None,
) -> Identity:
    """Read an :class:`Identity` from verified claims; :class:`IdentityError` if they are malformed or, with
    *requirements*, if no ``verified_claims`` element meets them.

    *top_level*: ``"fallback"`` reads the top-level claims when there is no ``verified_claims`` at all;
    ``"never"`` rejects such claims. With *requirements* configured, top-level claims are never read."""
    if top_level not in TOP_LEVEL_CLAIMS:
        raise ValueError(f"top_level must be one of {TOP_LEVEL_CLAIMS}, not {top_level!r}")
    if not isinstance(claims, Mapping):
        raise IdentityError("claims must be a JSON object")
    requirements = requirements or AssuranceRequirements()
    raw = claims.get("verified_claims")
    verification: Any = {}
    used: list[int] = []
    if raw is not None:
        elements = _elements(raw)
        when = time.time() if now is None else now
        problems = []
        for i, element in enumerate(elements):
            problem = requirements.problem(element.get("verification"), when) if requirements.configured else None
            if problem is None:
                used.append(i)
            else:
                problems.append((i, problem))
        if requirements.configured and not used:
            if not elements:
                raise IdentityError("no verified_claims evidence")
            if len(problems) == 1:
                raise IdentityError(problems[0][1])
            listed = "; ".join(f"[{i}] {p}" for i, p in problems)
            raise IdentityError(f"no verified_claims element meets the requirements: {listed}")
        sources: list[Mapping[str, Any]] = [elements[i]["claims"] for i in used]
        if used:
            verification = elements[used[0]].get("verification")
        source: Literal["verified_claims", "top_level"] = "verified_claims"
    elif requirements.configured or top_level == "never":
        raise IdentityError("no verified_claims evidence (top-level claims are not trusted)")
    else:
        sources, source = [claims], "top_level"
    nationalities = _nationalities(sources, names.nationalities)
    permanent = _first_country(sources, names.permanent_residence)
    flag = next((s[names.us_person] for s in sources if names.us_person in s), None)
    if flag is not None and not isinstance(flag, bool):
        raise IdentityError(f"claim {names.us_person!r} must be true or false, not {flag!r}")
    subject = claims.get("sub")
    issuer = claims.get("iss") if isinstance(claims.get("iss"), str) else None
    subject_hash = (
        hashlib.sha256(f"{issuer or ''}\x00{subject}".encode()).hexdigest()[:32] if isinstance(subject, str) else None
    )
    if not isinstance(verification, Mapping):
        verification = {}
    return Identity(
        us_person=flag if flag is not None else ("US" in nationalities or permanent == "US"),
        nationalities=nationalities,
        residence=_first_country(sources, names.residence),
        permanent_residence=permanent,
        most_recent_country=_first_country(sources, names.most_recent_country),
        subject_hash=subject_hash,
        issuer=issuer,
        assurance_level=_text(verification.get("assurance_level")),
        trust_framework=_text(verification.get("trust_framework")),
        verification_time=_text(verification.get("time")),
        claims_source=source,
        verified_elements=tuple(used),
    )


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None


def _at_least(level: Any, minimum: str) -> bool:
    if not isinstance(level, str):
        return False
    for scale in ASSURANCE_LEVELS:
        if minimum in scale and level.lower() in scale:
            return scale.index(level.lower()) >= scale.index(minimum)
    return level.lower() == minimum


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
