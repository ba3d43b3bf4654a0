"""The decision: a pure function of (policy, export class, location, identity) -> :class:`Decision`.

No I/O, no clock, no randomness: the same facts and the same policy always give the same decision, so any
decision can be explained offline (``geofence check``) and replayed from an audit record.

Rules, all evaluated so that a denial lists every reason:

* location: denied if the country, a country another database reported, their governing state (``HK`` is
  evaluated as ``CN``), any subdivision, or the represented country is in ``deny_destinations``; with
  ``allow_destinations``, denied unless every reported country (or its governing state, or one of its
  subdivisions) is listed. Not geolocatable -> ``unknown_location``.
* person: ``us_only`` needs a verified U.S. person; nationality lists apply to every citizenship and permanent
  residence (``rule = "all"``) or to the most recent one when the identity states it (``"most_recent"``,
  15 CFR 734.13(b)). Verified U.S. persons are not foreign persons, so nationality lists skip them unless
  ``check_us_persons``. A class that needs an identity and has none is denied with 401.
* anonymizer: ``anonymizers = "deny"`` refuses VPNs, Tor, hosting providers and proxies.
* client address: a broken proxy chain (``client_address_invalid``) denies every class that restricts anyone:
  it is not an unknown location but a request whose origin cannot be trusted.

Status: 503 when the decision could not be made, else 451 for any legal block, else 401 when only identity is
missing or invalid, else 200. Report mode turns a denial into an allow that still carries its reasons.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from ..geoip.location import Location
from ..identity.claims import Identity
from .classes import Mode
from .load import ClassPolicy, PersonRule, Policy

__all__ = ["Decision", "Reason", "decide", "error_decision"]

# Reason codes (stable: they appear in responses, logs and audit records).
DESTINATION_DENIED: Final = "destination_denied"
DESTINATION_NOT_ALLOWED: Final = "destination_not_allowed"
NATIONALITY_DENIED: Final = "nationality_denied"
NOT_US_PERSON: Final = "not_us_person"
IDENTITY_REQUIRED: Final = "identity_required"
IDENTITY_INVALID: Final = "identity_invalid"
ANONYMIZER: Final = "anonymizer"
LOCATION_UNKNOWN: Final = "location_unknown"
CLIENT_ADDRESS_INVALID: Final = "client_address_invalid"
EXEMPT: Final = "exempt"
REPORT_ONLY: Final = "report_only"
ERROR: Final = "error"
DATABASE_STALE: Final = "database_stale"
AUDIT_UNAVAILABLE: Final = "audit_unavailable"

_IDENTITY_CODES: Final = frozenset({IDENTITY_REQUIRED, IDENTITY_INVALID})
_INFORMATIONAL: Final = frozenset({EXEMPT, REPORT_ONLY})


class Reason(NamedTuple):
    """Why a decision came out as it did: a stable machine ``code`` (e.g. ``destination_denied``) and a
    human ``detail``; a denial lists every reason, not only the first."""

    code: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form, as denial bodies and audit records carry it."""
        return {"code": self.code, "detail": self.detail}


class Decision(NamedTuple):
    """The outcome for one request, with every fact it rested on."""

    allowed: bool
    status: int
    export_class: str
    mode: Mode
    reasons: tuple[Reason, ...]
    policy_version: str
    location: Location | None
    identity: Identity | None

    @property
    def would_deny(self) -> bool:
        """True when some rule denied, even if report mode let the request through."""
        return any(r.code not in _INFORMATIONAL for r in self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with the facts it used (``geofence check --json``)."""
        return {
            "allowed": self.allowed,
            "status": self.status,
            "export_class": self.export_class,
            "mode": self.mode,
            "reasons": [r.as_dict() for r in self.reasons],
            "policy_version": self.policy_version,
            "facts": {
                "location": None if self.location is None else self.location.as_dict(),
                "identity": None if self.identity is None else self.identity.as_dict(),
            },
        }


def decide(
    policy: Policy,
    export_class: str,
    location: Location | None,
    identity: Identity | None = None,
    *,
    identity_problem: str | None = None,
    location_problem: str | None = None,
    client_problem: str | None = None,
    exempt: str | None = None,
    trace: list[str] | None = None,
) -> Decision:
    """Decide one request. Never raises: a failure to decide is a 503 denial.

    *identity_problem* says why a presented identity was rejected (bad signature, expired, malformed claims);
    *location_problem* why there is no location (a private address, a Unix socket peer);
    *client_problem* why the client address cannot be trusted (a broken proxy chain: a malformed or withheld
    forwarding header from a trusted proxy, a server rewrite geofence cannot verify) — denied on every class
    that restricts anyone, even where ``unknown_location = "allow"``;
    *exempt* names the ``[exempt]`` entry that matched, if any; *trace* collects a readable account of every
    rule for ``geofence check``.
    """
    try:
        cls = policy.classes[export_class]
        if exempt is not None:
            if trace is not None:
                trace.append(f"exempt: {exempt}")
            return Decision(
                True, 200, export_class, cls.mode, (Reason(EXEMPT, exempt),), policy.version, location, identity
            )
        reasons: list[Reason] = []
        if client_problem is not None:  # no location to judge: the address itself is in doubt
            if cls.restricted:
                reasons.append(Reason(CLIENT_ADDRESS_INVALID, f"client address cannot be trusted: {client_problem}"))
            if trace is not None:
                trace.append(f"client address: {client_problem}; denied on classes that restrict anyone")
        else:
            _location_rule(policy, cls, location, location_problem, reasons, trace)
        _person_rule(cls.persons, identity, identity_problem, reasons, trace)
        _anonymizer_rule(cls, location, reasons, trace)
    except Exception as exc:  # fail closed: an error is never an allow
        return error_decision(
            policy, export_class, f"could not evaluate: {type(exc).__name__}: {exc}", location, identity
        )
    if not reasons:
        return Decision(True, 200, export_class, cls.mode, (), policy.version, location, identity)
    if cls.mode == "report":
        if trace is not None:
            trace.append("report mode: the request passes; the denial above is only logged")
        reasons.append(Reason(REPORT_ONLY, f"class {export_class} is in report mode"))
        return Decision(True, 200, export_class, cls.mode, tuple(reasons), policy.version, location, identity)
    status = 401 if all(r.code in _IDENTITY_CODES for r in reasons) else 451
    return Decision(False, status, export_class, cls.mode, tuple(reasons), policy.version, location, identity)


def error_decision(
    policy: Policy,
    export_class: str,
    detail: str,
    location: Location | None = None,
    identity: Identity | None = None,
    code: str = ERROR,
) -> Decision:
    """The 503 denial for a request that could not be decided (a broken or stale database, an internal error)."""
    return Decision(False, 503, export_class, "enforce", (Reason(code, detail),), policy.version, location, identity)


def _location_rule(
    policy: Policy,
    cls: ClassPolicy,
    location: Location | None,
    problem: str | None,
    reasons: list[Reason],
    trace: list[str] | None,
) -> None:
    if location is None or location.country is None:
        why = (problem or "no location") if location is None else f"not geolocatable ({location.reason})"
        if cls.unknown_location == "deny":
            reasons.append(Reason(LOCATION_UNKNOWN, f"location unknown: {why}"))
        if trace is not None:
            trace.append(f"location: {why}; unknown_location = {cls.unknown_location}")
        return
    countries = (location.country, *location.other_countries)
    governing = [policy.territories.get(c) for c in countries]
    if cls.deny:
        places = {*countries, *location.subdivisions, *(g for g in governing if g)}
        if cls.represented_country == "check" and location.represented_country:
            places.add(location.represented_country)
        denied = sorted(places & cls.deny)
        if denied:
            reasons.append(
                Reason(DESTINATION_DENIED, f"destination {', '.join(denied)} is denied for class {cls.name}")
            )
    if cls.allow is not None:
        allow = cls.allow
        outside = [
            c
            for c, g in zip(countries, governing, strict=True)
            if c not in allow and g not in allow and not any(s in allow for s in location.subdivisions if s[:2] == c)
        ]
        if outside:
            reasons.append(
                Reason(DESTINATION_NOT_ALLOWED, f"destination {', '.join(outside)} is not allowed for class {cls.name}")
            )
    if trace is not None:
        shown = location.country + (f" (governed as {governing[0]})" if governing[0] else "")
        extra = f"; other databases: {', '.join(location.other_countries)}" if location.other_countries else ""
        subs = f"; subdivisions {', '.join(location.subdivisions)}" if location.subdivisions else ""
        failed = [r for r in reasons if r.code in (DESTINATION_DENIED, DESTINATION_NOT_ALLOWED)]
        verdict = "; ".join(r.detail for r in failed) if failed else "allowed"
        trace.append(f"location: {shown}{subs}{extra} -> {verdict}")


def _person_rule(
    rule: PersonRule,
    identity: Identity | None,
    problem: str | None,
    reasons: list[Reason],
    trace: list[str] | None,
) -> None:
    if rule.kind == "any":
        if trace is not None:
            trace.append("person: any person may receive this class")
        return
    before = len(reasons)
    if problem is not None:
        reasons.append(Reason(IDENTITY_INVALID, problem))
    elif identity is None:
        needs = "a verified U.S. person" if rule.kind == "us_only" else "a verified nationality"
        reasons.append(Reason(IDENTITY_REQUIRED, f"this class needs {needs}; no identity was presented"))
    elif rule.kind == "us_only":
        if not identity.us_person:
            reasons.append(Reason(NOT_US_PERSON, "this class is for U.S. persons only"))
    elif identity.us_person and not rule.check_us_persons:
        pass  # not a foreign person: no deemed export
    else:
        if rule.rule == "most_recent" and identity.most_recent_country:
            countries: tuple[str, ...] = (identity.most_recent_country,)
        else:  # "all", or the most recent one is not stated: every citizenship and permanent residence
            countries = identity.nationalities + (
                (identity.permanent_residence,)
                if identity.permanent_residence and identity.permanent_residence not in identity.nationalities
                else ()
            )
        if not countries:
            reasons.append(Reason(IDENTITY_REQUIRED, "this class needs a verified nationality; the identity has none"))
        else:
            bad = [c for c in countries if c in rule.deny or (rule.allow is not None and c not in rule.allow)]
            if bad:
                reasons.append(
                    Reason(NATIONALITY_DENIED, f"nationality {', '.join(bad)} is not allowed for this class")
                )
    if trace is not None:
        who = "no identity" if identity is None else _describe(identity)
        verdict = "; ".join(r.detail for r in reasons[before:]) or "allowed"
        trace.append(f"person ({rule.kind}): {who} -> {verdict}")


def _describe(identity: Identity) -> str:
    parts = ["U.S. person" if identity.us_person else "not a U.S. person"]
    if identity.nationalities:
        parts.append("nationalities " + ", ".join(identity.nationalities))
    if identity.permanent_residence:
        parts.append(f"permanent residence {identity.permanent_residence}")
    return "; ".join(parts)


def _anonymizer_rule(
    cls: ClassPolicy, location: Location | None, reasons: list[Reason], trace: list[str] | None
) -> None:
    anonymizer = location.anonymizer if location is not None else None
    flagged = anonymizer is not None and anonymizer.any
    if flagged and cls.anonymizers == "deny":
        flags = ", ".join(k for k, v in anonymizer.as_dict().items() if v)  # type: ignore[union-attr]
        reasons.append(Reason(ANONYMIZER, f"anonymizer ({flags}) not allowed for class {cls.name}"))
    if trace is not None:
        if anonymizer is None:
            state = "no anonymizer database answered"
        else:
            state = ", ".join(k for k, v in anonymizer.as_dict().items() if v) or "not an anonymizer"
        trace.append(f"anonymizer: {state}; anonymizers = {cls.anonymizers}")
