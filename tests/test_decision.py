"""decide(): every rule and reason, table-driven; plus property tests of fail-closed behaviour."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.geoip.location import Anonymizer, Location
from geofence.identity.claims import Identity
from geofence.policy.decision import Decision, decide, error_decision
from geofence.policy.load import Policy, parse_policy

POLICY = parse_policy(
    {
        "defaults": {"class": "EAR99"},
        "groups": {"allies": ["GB", "CA"]},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "4E091": {
                "allow_destinations": ["US"],
                "deny_destinations": ["embargoed"],
                "persons": "us_only",
                "anonymizers": "deny",
                "unknown_location": "deny",
            },
            "ALLIES": {
                "allow_destinations": ["US", "allies", "FR-75C"],
                "persons": {"allow_nationalities": ["US", "allies"]},
            },
            "NO-E1": {"persons": {"deny_nationalities": ["group:E:1"]}, "unknown_location": "allow"},
            "NO-E1-STRICT": {"persons": {"deny_nationalities": ["group:E:1"], "check_us_persons": True}},
            "EAR-MOST-RECENT": {"persons": {"deny_nationalities": ["IR"], "rule": "most_recent"}},
            "SHADOW": {"allow_destinations": ["US"], "mode": "report"},
            "IGNORE-REP": {"deny_destinations": ["US"], "represented_country": "ignore"},
        },
    }
)


def loc(country: str | None, *subdivisions: str, **kw: Any) -> Location:
    return Location(network="198.18.0.0/15", country=country, subdivisions=subdivisions, **kw)


US = loc("US", "US-CA")
US_PERSON = Identity(us_person=True, nationalities=("US",))
GERMAN = Identity(us_person=False, nationalities=("DE",))


def codes(decision: Decision) -> list[str]:
    return [r.code for r in decision.reasons]


@pytest.mark.parametrize(
    ("export_class", "location", "identity", "allowed", "status", "reason_codes"),
    [
        # EAR99: only embargoed destinations and regions.
        ("EAR99", US, None, True, 200, []),
        ("EAR99", loc("CU"), None, False, 451, ["destination_denied"]),
        ("EAR99", loc("UA", "UA-43"), None, False, 451, ["destination_denied"]),  # Crimea
        ("EAR99", loc("UA", "UA-30"), None, True, 200, []),  # Kyiv
        ("EAR99", loc("DE", other_countries=("RU",)), None, False, 451, ["destination_denied"]),  # disputed
        ("EAR99", loc(None, reason="private"), None, True, 200, []),  # unknown_location = allow
        # 4E091: US persons in the US, no anonymizers, unknown location denied.
        ("4E091", US, US_PERSON, True, 200, []),
        ("4E091", loc("PR"), US_PERSON, True, 200, []),  # Puerto Rico is governed as US
        ("4E091", US, None, False, 401, ["identity_required"]),
        ("4E091", US, GERMAN, False, 451, ["not_us_person"]),  # a deemed export inside the US
        ("4E091", loc("DE"), US_PERSON, False, 451, ["destination_not_allowed"]),  # a US person abroad
        ("4E091", loc("DE"), None, False, 451, ["destination_not_allowed", "identity_required"]),
        ("4E091", loc("US", other_countries=("CA",)), US_PERSON, False, 451, ["destination_not_allowed"]),
        ("4E091", loc(None, reason="not_found"), US_PERSON, False, 451, ["location_unknown"]),
        ("4E091", None, US_PERSON, False, 451, ["location_unknown"]),
        ("4E091", loc("US", anonymizer=Anonymizer(vpn=True)), US_PERSON, False, 451, ["anonymizer"]),
        ("4E091", loc("US", anonymizer=Anonymizer()), US_PERSON, True, 200, []),
        (
            "4E091",
            loc("US", represented_country="IR", represented_country_type="embassy"),
            US_PERSON,
            False,
            451,
            ["destination_denied"],
        ),
        ("4E091", loc("CU"), GERMAN, False, 451, ["destination_denied", "destination_not_allowed", "not_us_person"]),
        # Territory mapping on deny: Puerto Rico is governed as the US; a represented country can be ignored.
        ("IGNORE-REP", loc("PR"), None, False, 451, ["destination_denied"]),
        ("IGNORE-REP", loc("DE", represented_country="US", represented_country_type="military"), None, True, 200, []),
        # Nationality lists: every nationality must pass; US persons are not foreign persons.
        ("ALLIES", loc("GB"), Identity(us_person=False, nationalities=("GB", "CA")), True, 200, []),
        (
            "ALLIES",
            loc("GB"),
            Identity(us_person=False, nationalities=("GB", "CN")),
            False,
            451,
            ["nationality_denied"],
        ),
        ("ALLIES", loc("FR", "FR-75C"), Identity(us_person=False, nationalities=("CA",)), True, 200, []),  # Paris
        (
            "ALLIES",
            loc("FR", "FR-13"),
            Identity(us_person=False, nationalities=("CA",)),
            False,
            451,
            ["destination_not_allowed"],
        ),
        (
            "ALLIES",
            loc("GB"),
            Identity(us_person=False, nationalities=("CA",), permanent_residence="CN"),
            False,
            451,
            ["nationality_denied"],
        ),
        ("ALLIES", loc("GB"), Identity(us_person=False), False, 401, ["identity_required"]),
        ("ALLIES", loc("GB"), Identity(us_person=True, nationalities=("CN",), permanent_residence="US"), True, 200, []),
        ("NO-E1", loc("US"), Identity(us_person=False, nationalities=("DE", "IR")), False, 451, ["nationality_denied"]),
        ("NO-E1", loc("US"), Identity(us_person=True, nationalities=("US", "IR")), True, 200, []),
        (
            "NO-E1-STRICT",
            loc("US"),
            Identity(us_person=True, nationalities=("US", "IR")),
            False,
            451,
            ["nationality_denied"],
        ),
        # EAR 734.13(b): only the most recent citizenship counts, when the identity states it.
        (
            "EAR-MOST-RECENT",
            loc("US"),
            Identity(us_person=False, nationalities=("IR", "CA"), most_recent_country="CA"),
            True,
            200,
            [],
        ),
        (
            "EAR-MOST-RECENT",
            loc("US"),
            Identity(us_person=False, nationalities=("IR", "CA")),
            False,
            451,
            ["nationality_denied"],
        ),  # not stated: every nationality counts
        # Report mode: the request passes, the reasons are kept.
        ("SHADOW", loc("DE"), None, True, 200, ["destination_not_allowed", "report_only"]),
        ("SHADOW", US, None, True, 200, []),
    ],
)
def test_rules(
    export_class: str,
    location: Location | None,
    identity: Identity | None,
    allowed: bool,
    status: int,
    reason_codes: list[str],
) -> None:
    decision = decide(POLICY, export_class, location, identity)
    assert (decision.allowed, decision.status, codes(decision)) == (allowed, status, reason_codes)
    assert decision.export_class == export_class
    assert decision.policy_version == POLICY.version
    assert decision.would_deny == any(c not in ("report_only", "exempt") for c in reason_codes)


def test_hong_kong_is_evaluated_as_china() -> None:
    policy = parse_policy({"classes": {"EAR99": {"deny_destinations": ["CN"]}}})
    assert codes(decide(policy, "EAR99", loc("HK"))) == ["destination_denied"]
    assert "CN" in decide(policy, "EAR99", loc("HK")).reasons[0].detail


def test_identity_problem_is_401_identity_invalid() -> None:
    decision = decide(POLICY, "4E091", US, None, identity_problem="token expired")
    assert (decision.status, codes(decision)) == (401, ["identity_invalid"])
    assert decision.reasons[0].detail == "token expired"


def test_exempt() -> None:
    decision = decide(POLICY, "4E091", loc("CU"), None, exempt="path /healthz is exempt")
    assert (decision.allowed, codes(decision)) == (True, ["exempt"])


def test_unknown_class_fails_closed_with_503() -> None:
    decision = decide(POLICY, "NOPE", US, US_PERSON)
    assert (decision.allowed, decision.status, codes(decision)) == (False, 503, ["error"])


def test_internal_error_fails_closed_with_503() -> None:
    broken = Location(network="x", country="US", subdivisions=None)  # type: ignore[arg-type]
    decision = decide(POLICY, "EAR99", broken)
    assert (decision.allowed, decision.status) == (False, 503)


def test_error_decision() -> None:
    decision = error_decision(POLICY, "4E091", "database corrupt")
    assert (decision.allowed, decision.status, codes(decision)) == (False, 503, ["error"])


def test_decision_as_dict() -> None:
    data = decide(POLICY, "4E091", US, None).as_dict()
    assert set(data) == {"allowed", "status", "export_class", "mode", "reasons", "policy_version", "facts"}
    assert data["reasons"][0]["code"] == "identity_required"
    assert data["facts"]["location"]["country"] == "US"
    assert data["facts"]["identity"] is None


def test_trace_explains_every_rule() -> None:
    trace: list[str] = []
    decide(POLICY, "4E091", US, GERMAN, trace=trace)
    assert [line.split(":")[0] for line in trace] == ["location", "person (us_only)", "anonymizer"]
    assert "this class is for U.S. persons only" in trace[1]


def test_decide_is_pure() -> None:
    first = decide(POLICY, "4E091", loc("DE"), GERMAN)
    assert all(decide(POLICY, "4E091", loc("DE"), GERMAN) == first for _ in range(5))


# --- properties -------------------------------------------------------------------------------------------

COUNTRIES = ["US", "CA", "GB", "DE", "CN", "HK", "PR", "CU", "IR", "UA", "RU"]
SUBDIVISIONS = {"US": ["US-CA", "US-NY"], "UA": ["UA-43", "UA-30"], "GB": ["GB-ENG"]}
DESTINATIONS = st.lists(st.sampled_from([*COUNTRIES, "UA-43", "US-CA"]), max_size=4)


@st.composite
def classes(draw: st.DrawFn) -> dict[str, Any]:
    cls: dict[str, Any] = {"deny_destinations": draw(DESTINATIONS)}
    if draw(st.booleans()):
        cls["allow_destinations"] = draw(DESTINATIONS)
    cls["persons"] = draw(
        st.sampled_from(["any", "us_only"])
        | st.fixed_dictionaries({"deny_nationalities": st.lists(st.sampled_from(COUNTRIES[:8]), max_size=3)})
        | st.fixed_dictionaries({"allow_nationalities": st.lists(st.sampled_from(COUNTRIES[:8]), max_size=3)})
    )
    cls["anonymizers"] = draw(st.sampled_from(["deny", "allow"]))
    cls["unknown_location"] = draw(st.sampled_from(["deny", "allow"]))
    return cls


@st.composite
def locations(draw: st.DrawFn) -> Location | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    if draw(st.integers(0, 5)) == 0:
        return Location(network="198.18.0.0/15", reason=draw(st.sampled_from(["not_found", "private", "cgnat"])))
    country = draw(st.sampled_from(COUNTRIES))
    options = SUBDIVISIONS.get(country)
    subs = draw(st.lists(st.sampled_from(options), max_size=1)) if options else []
    anonymizer = draw(st.none() | st.builds(Anonymizer, st.booleans(), st.booleans(), st.booleans()))
    others = draw(st.lists(st.sampled_from(COUNTRIES), max_size=1).map(lambda xs: tuple(x for x in xs if x != country)))
    return Location(
        network="198.18.0.0/15",
        country=country,
        subdivisions=tuple(subs),
        other_countries=others,
        anonymizer=anonymizer,
    )


identities = st.none() | st.builds(
    Identity,
    us_person=st.booleans(),
    nationalities=st.lists(st.sampled_from(COUNTRIES[:8]), max_size=2, unique=True).map(tuple),
)


def _policy(cls: dict[str, Any]) -> Policy:
    return parse_policy({"defaults": {"class": "C"}, "classes": {"C": cls}})


def _denying_facts(policy: Policy, location: Location | None, identity: Identity | None) -> list[str]:
    """An independent statement of the rules: every fact that must deny."""
    cls = policy.classes["C"]
    facts = []
    if location is None or location.country is None:
        if cls.unknown_location == "deny":
            facts.append("unknown location")
    else:
        reported = [location.country, *location.other_countries]
        places = set(reported) | set(location.subdivisions)
        places |= {policy.territories[c] for c in reported if c in policy.territories}
        if places & cls.deny:
            facts.append("denied place")
        if cls.allow is not None:
            for c in reported:
                ok = {c, policy.territories.get(c)} & cls.allow or {
                    s for s in location.subdivisions if s[:2] == c
                } & cls.allow
                if not ok:
                    facts.append("place not allowed")
        if location.anonymizer is not None and True in location.anonymizer and cls.anonymizers == "deny":
            facts.append("anonymizer")
    rule = cls.persons
    if rule.kind != "any":
        if identity is None:
            facts.append("no identity")
        elif rule.kind == "us_only" and not identity.us_person:
            facts.append("not a US person")
        elif rule.kind == "nationalities" and not identity.us_person:
            if not identity.nationalities:
                facts.append("no nationality")
            for n in identity.nationalities:
                if n in rule.deny or (rule.allow is not None and n not in rule.allow):
                    facts.append("nationality")
    return facts


@settings(max_examples=300, deadline=None)
@given(classes(), locations(), identities)
def test_allowed_exactly_when_no_denying_fact(
    cls: dict[str, Any], location: Location | None, identity: Identity | None
) -> None:
    policy = _policy(cls)
    decision = decide(policy, "C", location, identity)
    facts = _denying_facts(policy, location, identity)
    assert decision.allowed == (not facts), (facts, decision)
    assert decision.status == (200 if not facts else 401 if decision.status == 401 else 451)
    if decision.allowed:
        assert decision.reasons == ()
    else:
        assert decision.reasons  # a denial always says why


@settings(max_examples=200, deadline=None)
@given(classes(), locations(), identities)
def test_report_mode_never_blocks_but_keeps_the_reasons(
    cls: dict[str, Any], location: Location | None, identity: Identity | None
) -> None:
    enforce = decide(_policy(cls), "C", location, identity)
    report = decide(_policy({**cls, "mode": "report"}), "C", location, identity)
    assert report.allowed and report.status == 200
    assert report.would_deny == (not enforce.allowed)
    assert [r for r in report.reasons if r.code != "report_only"] == list(enforce.reasons)


@settings(max_examples=200, deadline=None)
@given(classes(), locations(), identities, st.sampled_from(["CU", "UA-43"]))
def test_adding_a_denied_place_never_allows(
    cls: dict[str, Any], location: Location | None, identity: Identity | None, place: str
) -> None:
    cls = {**cls, "deny_destinations": [*cls["deny_destinations"], place]}
    if location is None or location.country is None:
        location = Location(network="198.18.0.0/15", country="UA" if place == "UA-43" else "CU")
    if place == "UA-43":
        location = location._replace(country="UA", subdivisions=("UA-43",))
    else:
        location = location._replace(other_countries=(*location.other_countries, "CU"))
    decision = decide(_policy(cls), "C", location, identity)
    assert not decision.allowed
    assert "destination_denied" in codes(decision)


@pytest.mark.parametrize(
    ("export_class", "identity", "allowed", "reason_codes"),
    [
        ("EAR99", None, False, ["client_address_invalid"]),  # even with unknown_location = "allow"
        ("4E091", US_PERSON, False, ["client_address_invalid"]),  # one reason, not also location_unknown
        ("4E091", None, False, ["client_address_invalid", "identity_required"]),
        ("SHADOW", None, True, ["client_address_invalid", "report_only"]),  # report mode still reports it
    ],
)
def test_a_broken_proxy_chain_denies_every_restricting_class(
    export_class: str, identity: Identity | None, allowed: bool, reason_codes: list[str]
) -> None:
    decision = decide(POLICY, export_class, None, identity, client_problem="malformed x-forwarded-for")
    assert (decision.allowed, codes(decision)) == (allowed, reason_codes)
    assert decision.status == (200 if allowed else 451)


def test_a_broken_proxy_chain_does_not_deny_a_class_that_restricts_nobody() -> None:
    policy = parse_policy({"classes": {"OPEN": {"unknown_location": "allow"}}, "defaults": {"class": "OPEN"}})
    trace: list[str] = []
    decision = decide(policy, "OPEN", None, client_problem="malformed x-forwarded-for", trace=trace)
    assert decision.allowed and decision.reasons == ()
    assert trace[0].startswith("client address: malformed x-forwarded-for")
