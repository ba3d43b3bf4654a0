"""Loading and validating policy files: every problem listed, with suggestions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geofence.places import load_reference
from geofence.policy.load import Policy, PolicyError, load_policy, parse_policy

MINIMAL: dict[str, Any] = {"classes": {"EAR99": {"deny_destinations": ["embargoed"]}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    return [str(p) for p in info.value.problems]


def test_bundled_example_policy_loads() -> None:
    policy = load_policy()
    assert set(policy.classes) == {"EAR99", "4E091"}
    assert policy.default_class == "EAR99"
    assert policy.classes["4E091"].allow == frozenset({"US"})
    assert {"CU", "IR", "KP", "SY", "UA-43", "UA-40", "UA-14", "UA-09"} <= policy.classes["EAR99"].deny
    assert len(policy.version) == 16


def test_minimal_policy_defaults() -> None:
    policy = parse_policy(MINIMAL)
    cls = policy.classes["EAR99"]
    assert cls.allow is None
    assert cls.mode == "enforce"
    assert cls.unknown_location == "deny"  # fail closed unless the operator says otherwise
    assert cls.anonymizers == "allow"
    assert cls.persons.kind == "any"
    assert policy.databases is None and policy.proxy_header == "x-forwarded-for"


def test_reference_groups_and_territories() -> None:
    reference = load_reference()
    assert reference.groups["E:1"] == frozenset({"IR", "KP", "SY"})
    assert reference.groups["E:2"] == frozenset({"CU"})
    assert "CN" in reference.groups["D:5"] and "MO" not in reference.groups["D:5"]
    assert reference.territories["HK"] == "CN"
    assert reference.territories["PR"] == "US"
    assert reference.as_of is not None and reference.as_of.year == 2026


def test_groups_expand_including_operator_groups() -> None:
    policy = parse_policy(
        {
            "defaults": {"class": "X"},
            "groups": {"allies": ["GB", "CA"], "partners": ["group:allies", "JP"]},
            "classes": {
                "X": {"allow_destinations": ["partners", "group:E:2"], "deny_destinations": ["group:E:1", "UA-43"]}
            },
        }
    )
    cls = policy.classes["X"]
    assert cls.allow == frozenset({"GB", "CA", "JP", "CU"})
    assert cls.deny == frozenset({"IR", "KP", "SY", "UA-43"})


def test_operator_can_override_a_reference_group() -> None:
    policy = parse_policy(
        {
            "defaults": {"class": "X"},
            "groups": {"embargoed": ["CU", "IR"]},
            "classes": {"X": {"deny_destinations": ["embargoed"]}},
        }
    )
    assert policy.classes["X"].deny == frozenset({"CU", "IR"})


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("IRN", "did you mean IR (Iran)?"),
        ("Iran", "did you mean IR (Iran)?"),
        ("cu", "did you mean CU (Cuba)?"),
        ("Germny", "did you mean DE (Germany)?"),
        ("E1", "did you mean group:E:1?"),
        ("UA-99", "not an ISO 3166-2 subdivision code"),
        ("group:E:9", "unknown group 'E:9'"),
        ("alies", "did you mean group:allies?"),
    ],
)
def test_typo_in_a_destination_is_an_error_with_a_suggestion(destination: str, expected: str) -> None:
    found = problems(
        {
            "defaults": {"class": "X"},
            "groups": {"allies": ["GB"]},
            "classes": {"X": {"deny_destinations": [destination]}},
        }
    )
    assert len(found) == 1
    assert found[0].startswith("classes.X.deny_destinations: ")
    assert expected in found[0]


def test_every_problem_is_listed_with_its_key_path() -> None:
    found = problems(
        {
            "defaults": {"mode": "enforse", "class": "EAR98"},
            "clases": {},
            "classes": {
                "EAR99": {"deny_destinatons": ["CU"], "anonymizers": "block", "persons": "usonly"},
                "4E091": {"allow_destinations": ["USA"], "persons": {"allow_nationalities": ["XX"], "rule": "latest"}},
            },
            "routes": [{"path": "v1/models", "class": "4E092", "method": "FETCH"}, {"class": "EAR99"}],
            "exempt": {"networks": ["10.0.0.1/8", "not-a-net"]},
            "proxies": {"trusted": ["300.1.1.1/32"]},
            "groups": {"bad": ["Narnia"]},
        }
    )
    text = "\n".join(found)
    expectations = [
        "defaults.mode: 'enforse' is not one of 'enforce', 'report'; did you mean 'enforce'?",
        "defaults.class: unknown class 'EAR98'; did you mean 'EAR99'?",
        "clases: unknown key; did you mean 'classes'?",
        "classes.EAR99.deny_destinatons: unknown key; did you mean 'deny_destinations'?",
        "classes.EAR99.anonymizers: 'block' is not one of 'deny', 'allow'",
        "classes.EAR99.persons: 'usonly' is not one of 'any', 'us_only'; did you mean 'us_only'?",
        "classes.4E091.allow_destinations: unknown destination 'USA'; did you mean US (United States)?",
        "classes.4E091.persons.allow_nationalities: unknown destination 'XX'",
        "classes.4E091.persons.rule: 'latest' is not one of 'all', 'most_recent'",
        "routes[0].path: 'v1/models' must start with '/'",
        "routes[0].class: unknown class '4E092'",
        "routes[0].method: 'FETCH' is not an HTTP method",
        "routes[1].path: required",
        "exempt.networks[0]: '10.0.0.1/8' has host bits set",
        "exempt.networks[1]: 'not-a-net' is not an IP network",
        "proxies.trusted[0]: '300.1.1.1/32' is not an IP network",
        "groups.bad: unknown destination 'Narnia'",
    ]
    for expected in expectations:
        assert expected in text, f"missing: {expected}\n--- got:\n{text}"
    assert len(found) == len(expectations), text


def test_unused_operator_group_is_still_validated() -> None:
    assert any("groups.spare" in p for p in problems({**MINIMAL, "groups": {"spare": ["ZZZ"]}}))


def test_group_cycle_is_an_error() -> None:
    found = problems(
        {"groups": {"a": ["group:b"], "b": ["group:a"]}, "classes": {"EAR99": {"deny_destinations": ["a"]}}}
    )
    assert any("includes itself" in p for p in found)


def test_group_name_must_not_look_like_a_country() -> None:
    assert any("must not look like a country code" in p for p in problems({**MINIMAL, "groups": {"EU": ["DE"]}}))


def test_route_body_keys_go_together() -> None:
    found = problems({**MINIMAL, "routes": [{"path": "/a", "class": "EAR99", "json_field": "model"}]})
    assert found == ["routes[0]: json_field needs equals or matches"]


def test_wrong_types() -> None:
    found = problems({"classes": {"EAR99": {"deny_destinations": "CU", "mode": 3}}, "routes": {"path": "/"}})
    assert "classes.EAR99.mode: must be a string, not an integer" in found
    assert "routes: must be an array of tables ([[routes]])" in found


def test_no_classes() -> None:
    assert problems({}) == ["classes: define at least one export class"]


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[defaults]\nmode = "enforce"\nclass = \n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert "line 3" in str(info.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="No such file"):
        load_policy(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary)


def test_relative_database_paths_are_relative_to_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[geoip]\ndatabases = ["GeoIP2-City.mmdb"]\n[classes.EAR99]\n')
    assert load_policy(path).databases == (str(tmp_path / "GeoIP2-City.mmdb"),)


def test_version_changes_with_content_only() -> None:
    a = parse_policy(MINIMAL)
    b = parse_policy({"classes": {"EAR99": {"deny_destinations": ["embargoed"]}}})
    c = parse_policy({"classes": {"EAR99": {"deny_destinations": ["embargoed", "CN"]}}})
    assert a.version == b.version != c.version
    # Spelling a set differently but meaning the same gives the same version.
    d = parse_policy({"classes": {"EAR99": {"deny_destinations": ["CN", "group:embargoed"]}}})
    assert d.version == c.version


def test_policy_is_immutable() -> None:
    policy = parse_policy(MINIMAL)
    assert isinstance(policy, Policy)
    with pytest.raises(AttributeError):
        policy.default_class = "X"  # type: ignore[misc]


def test_exempt_networks() -> None:
    from geofence.network.addresses import address_key

    policy = parse_policy({**MINIMAL, "exempt": {"networks": ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]}})
    assert policy.exempt_network(address_key("192.0.2.55")) == "client in exempt network 192.0.2.0/24"
    assert policy.exempt_network(address_key("::ffff:192.0.2.55")) == "client in exempt network 192.0.2.0/24"
    assert policy.exempt_network(address_key("2001:db8::1")) == "client in exempt network 2001:db8::/32"
    assert policy.exempt_network(address_key("198.51.100.7")) == "client in exempt network 198.51.100.7"
    assert policy.exempt_network(address_key("198.51.100.8")) is None
    assert policy.exempt_network(None) is None


def test_response_and_proxy_sections() -> None:
    policy = parse_policy(
        {
            **MINIMAL,
            "response": {"blocked_by": "https://example.com/export"},
            "proxies": {"trusted": ["unix", "10.0.0.0/8"], "header": "Forwarded"},
        }
    )
    assert policy.response.blocked_by == "https://example.com/export"
    assert [text for _, _, text in policy.trusted_proxies] == ["unix", "10.0.0.0/8"]
    assert policy.proxy_header == "forwarded"
    found = problems({**MINIMAL, "response": {"blocked_by": "not a uri"}, "proxies": {"header": "bad header"}})
    assert "response.blocked_by: 'not a uri' is not an absolute URI (ASCII: percent-encode other characters)" in found
    assert "proxies.header: 'bad header' is not an HTTP header name" in found


@pytest.mark.parametrize("key", ["groups", "classes", "routes", "exempt", "identity", "geoip"])
def test_wrong_section_types_are_problems_not_crashes(key: str) -> None:
    found = problems({**MINIMAL, key: 5} if key != "classes" else {"classes": 5})
    assert found and all("Traceback" not in p for p in found)


def test_get_rules_cover_head_and_websocket_handshakes() -> None:
    policy = parse_policy({**MINIMAL, "routes": [{"method": "GET", "path": "/w", "class": "EAR99"}]})
    assert policy.routes.rules[0].methods == ("GET", "HEAD", "WEBSOCKET")  # a handshake is a GET on the wire
