"""The route index only narrows the rules tried: classification equals trying every rule's own regex in order.

The reference below is the naive reading of the policy (each rule's regex, first match wins, the later matching
rules as parameter candidates). It uses nothing of the index, so it also holds for the single-alternation table
the index replaced: run against that, this file is an equivalence guard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.routing.params import ParamRule, compile_param
from geofence.routing.routes import Route, RouteTable, _host_spellings, _rule_regex, compile_glob, path_spellings
from geofence.routing.rule import RouteRule

DEFAULT = "D"
Spec = tuple[str, str, tuple[str, ...], str | None, dict[str, Any]]  # path, class, methods, host, parameter


def reference_one(rules: Sequence[RouteRule], exempt: Sequence[str], method: str, host: str, path: str) -> Route:
    """One spelling, the slow way: every rule's own regex over "METHOD host path", in policy order."""
    hit = next((g for g in exempt if re.fullmatch(compile_glob(g), path, re.DOTALL)), None)
    why = None if hit is None else f"path matches exempt {hit}"
    subject = f"{method} {host} {path}"
    matching = [i for i, rule in enumerate(rules) if re.fullmatch(_rule_regex(rule), subject, re.DOTALL)]
    if not matching:
        return Route(DEFAULT, None, None, why)
    first = rules[matching[0]]
    params = [compile_param(rules[i]) for i in matching]
    if params[0].source == "":
        return Route(first.export_class, first, None, why)
    candidates = [params[0]]
    for param in params[1:]:  # the later matching rules, up to the first that reads no parameter
        candidates.append(param)
        if param.source == "":
            break
    return Route(first.export_class, first, ParamRule(tuple(candidates), DEFAULT), why)


def reference(
    rules: Sequence[RouteRule], exempt: Sequence[str], method: str, host: str, path: str, root_path: str = ""
) -> Route:
    """Every spelling, combined as :meth:`RouteTable.classify` documents it."""
    method = method.upper()
    paths = path_spellings(path, root_path)
    routes = [reference_one(rules, exempt, method, h, p) for h in _host_spellings(host) for p in paths]
    if all(r.exempt is not None for r in routes):
        return routes[0]
    also: list[Route] = []
    for route in routes[1:]:
        if route[:3] != routes[0][:3] and all(route[:3] != r[:3] for r in also):
            also.append(route._replace(exempt=None))
    return routes[0]._replace(exempt=None, also=tuple(also))


def check(
    rules: Sequence[RouteRule], method: str, host: str, path: str, root_path: str = "", exempt: Sequence[str] = ()
) -> Route:
    found = RouteTable(rules, DEFAULT, exempt).classify(method, host, path, root_path)
    assert found == reference(rules, exempt, method, host, path, root_path)
    return found


# Few segment spellings, so that rules and paths collide; odd ones (encoded slash, dot segments, a newline).
SEGMENTS = ["a", "b", "ab", "v1", "%2F", "..", ".", "", "a\n", "x.y"]
GLOB_SEGMENTS = [*SEGMENTS, "*", "**", "a*", "*b", "**b"]
RULE_PATH = st.builds(
    lambda lead, parts, tail: lead + "/".join(parts) + tail,
    st.sampled_from(["/", "/", "/", "", "//", " /"]),  # " /": the spaces of "METHOD host path" blur
    st.lists(st.sampled_from(GLOB_SEGMENTS), max_size=4),
    st.sampled_from(["", "", "/", "/**", "/**", "/**/", "**", "*", "/**b", "/**/**", "/**/b"]),
)
PARAMS = st.sampled_from(
    [
        {},
        {},
        {"json_field": "model", "equals": ("m",)},
        {"query_param": "model", "matches": ("m*",)},
        {"header": "x-model", "equals": ("m",)},
    ]
)
RULE = st.builds(
    lambda path, cls, methods, host, params: (path, cls, methods, host, params),
    RULE_PATH,
    st.sampled_from(["C0", "C1", "C2"]),
    st.lists(st.sampled_from(["GET", "POST", "get", "A", "A B", ""]), max_size=2).map(tuple),
    st.none() | st.sampled_from(["a.example", "*.example", "A.Example.", "*", "x y"]),
    PARAMS,
)
REQUEST_PATH = st.one_of(
    st.builds(
        lambda lead, parts, tail: lead + "/".join(parts) + tail,
        st.sampled_from(["/", "/", "", "//"]),
        st.lists(st.sampled_from([*SEGMENTS, "b c", "abx", "%2f"]), max_size=5),
        st.sampled_from(["", "", "/", "//", "b", "/."]),
    ),
    st.text(alphabet="/ab.%2F\n *", max_size=12),
)
METHOD = st.sampled_from(["GET", "POST", "get", "A B", "", "PUT"]) | st.text(alphabet="GETA B", max_size=4)
HOST = st.sampled_from(["a.example", "b.example", "A.EXAMPLE.:80", "x y", "", "[::1]:80", "example"])


def build(specs: Sequence[Spec]) -> list[RouteRule]:
    return [
        RouteRule(path, cls, methods=methods, host=host, index=i, **params)
        for i, (path, cls, methods, host, params) in enumerate(specs)
    ]


@settings(max_examples=1500, deadline=None)
@given(
    specs=st.lists(RULE, max_size=12),
    exempt=st.lists(RULE_PATH, max_size=2),
    method=METHOD,
    host=HOST,
    paths=st.lists(REQUEST_PATH, min_size=1, max_size=4),
    root_path=st.sampled_from(["", "", "/a", "/a/b", "/ab/"]),
)
def test_classification_equals_trying_every_rule_in_order(
    specs: list[Spec],
    exempt: list[str],
    method: str,
    host: str,
    paths: list[str],
    root_path: str,
) -> None:
    rules = build(specs)
    table = RouteTable(rules, DEFAULT, exempt)
    for path in paths:  # several paths on one table: its index's cached alternations are reused
        assert table.classify(method, host, path, root_path) == reference(rules, exempt, method, host, path, root_path)


@settings(max_examples=300, deadline=None)
@given(
    prefixes=st.lists(st.lists(st.sampled_from(["a", "b", "ab"]), max_size=3), min_size=1, max_size=40),
    tails=st.data(),
    path=REQUEST_PATH,
    method=st.sampled_from(["GET", "POST"]),
)
def test_many_rules_sharing_prefixes(prefixes: list[list[str]], tails: st.DataObject, path: str, method: str) -> None:
    # Deep and shared trie paths: a rule filed anywhere on the way must stay a candidate, in order.
    specs: list[Spec] = [
        ("/" + "/".join(p) + tails.draw(st.sampled_from(["", "/**", "/*", "/", "*", "/**b"])), f"C{i % 3}",
         tails.draw(st.sampled_from([(), ("GET",)])), None, tails.draw(PARAMS))
        for i, p in enumerate(prefixes)
    ]  # fmt: skip
    check(build(specs), method, "h.example", path)


def test_a_thousand_rules_the_last_matches() -> None:
    rules = [RouteRule(f"/v1/models/model-{i:04d}/**", f"C{i}", index=i) for i in range(1000)]
    route = check(rules, "GET", "api.example", "/v1/models/model-0999/files/x")
    assert route.rule is rules[999]
    assert check(rules, "GET", "api.example", "/v1/models/model-0999").rule is rules[999]  # the bare prefix
    assert check(rules, "GET", "api.example", "/v1/models/model-1000/x").rule is None


def test_a_root_glob_rule_before_a_literal_rule_wins() -> None:
    rules = [
        RouteRule("/*/models/**", "ROOT", index=0),
        RouteRule("/v1/models/m/**", "LITERAL", index=1),
        RouteRule("**", "ANY", methods=("DELETE",), index=2),
        RouteRule("/v1/models/**", "LATER", index=3),
    ]
    assert check(rules, "GET", "", "/v1/models/m/x").rule is rules[0]
    assert check(rules, "DELETE", "", "/v2/x").rule is rules[2]
    assert check(rules, "DELETE", "", "/v1/models/m").rule is rules[0]
    assert check(rules, "GET", "", "/v1/other").rule is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/files", "F"), ("/files/", "F"), ("/files//", "F"), ("/filesx", None), ("/files/x", None)],
)
def test_trailing_slash_rule(path: str, expected: str | None) -> None:
    rules = [RouteRule("/files/", "F", index=0), RouteRule("/files/x/", "X", methods=("POST",), index=1)]
    assert check(rules, "GET", "", path).rule == (rules[0] if expected else None)


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("/v1/x/**", "/v1/x", True),  # `/**` also matches the bare prefix
        ("/v1/x/**", "/v1/x/", True),
        ("/v1/x/**", "/v1/xy", False),
        ("/v1/x/**y", "/v1/xy", True),  # ... and lets what follows it join the last literal segment
        ("/v1/x/**/y", "/v1/x/y", True),
        ("/v1/x/**/**y", "/v1/xy", True),
        ("/v1/x*", "/v1/xyz", True),
        ("/v1/x/**/", "/v1/x", True),
        ("v1/x", "v1/x", True),  # not rooted: compared as written
        ("", "", True),
    ],
)
def test_glob_literal_prefixes(glob: str, path: str, matches: bool) -> None:
    rules = [RouteRule(glob, "G", index=0)]
    route = check(rules, "GET", "", path)
    assert any(r.rule is rules[0] for r in (route, *route.also)) is matches


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/a\nb", 0),  # `**` crosses a newline
        ("/v1/models\n/x", None),  # a newline in a literal segment is no match
        ("/v1/q/a\n/export", 1),
        ("/v1/models%2Fsecret", None),  # an encoded slash is no segment boundary
        ("/v1/q/a%2Fb/export", 1),
        ("/v1/a%2Fb/raw", 2),
        ("/v1/a/b/raw", None),
    ],
)
def test_newlines_and_encoded_slashes(path: str, expected: int | None) -> None:
    rules = [
        RouteRule("/v1/models/**", "M", index=0),
        RouteRule("/v1/q/*/export", "E", index=1),
        RouteRule("/v1/a%2Fb/raw", "R", index=2),
    ]
    route = check(rules, "GET", "", path)
    assert route.rule == (None if expected is None else rules[expected])


def test_host_rules() -> None:
    rules = [
        RouteRule("/**", "INTERNAL", host="*.internal.example", index=0),
        RouteRule("/v1/models/m/**", "M", index=1),
        RouteRule("/v1/**", "API", host="API.Example.COM.", index=2),
    ]
    assert check(rules, "GET", "ops.internal.example:443", "/v1/models/m/x").rule is rules[0]
    assert check(rules, "GET", "a.b.internal.example", "/v1/models/m/x").rule is rules[1]
    route = check(rules, "GET", "API.example.com.", "/v1/other")
    assert route.rule is rules[2] and route.also == (Route(DEFAULT, None, None, None),)  # as sent: no rule
    assert check(rules, "GET", "api.example.com /v1", "/v1/x").rule is None  # a space is no host


def test_parameter_candidates_come_from_every_bucket() -> None:
    rules = [
        RouteRule("/v1/messages", "J", methods=("POST",), json_field="model", equals=("m",), index=0),
        RouteRule("/*/messages", "Q", query_param="model", equals=("m",), index=1),
        RouteRule("/v2/**", "OTHER", index=2),  # matches nothing here: not a candidate
        RouteRule("/v1/**", "H", header="x-model", equals=("m",), index=3),
        RouteRule("**", "LAST", index=4),
        RouteRule("/v1/messages", "NEVER", index=5),  # after a rule without a parameter
    ]
    route = check(rules, "POST", "", "/v1/messages")
    assert route.params is not None
    assert [p.rule.index for p in route.params.candidates] == [0, 1, 3, 4]


def test_spaces_blur_the_fields() -> None:
    # A space in a method, or in a rule's method or host, blurs the fields of "METHOD host path": the part that
    # matches the rule's glob is not the path. Such rules, and such requests, are tried against every rule.
    rules = [
        RouteRule("/v1/**", "V1", index=0),
        RouteRule(" /x", "BLURRED", methods=("A",), host="*", index=1),  # "A B" + " " + "" + " " + "/x"
        RouteRule("/y", "SPACED HOST", host="b /z", index=2),
        RouteRule("/y", "SPACED METHOD", methods=("GET b",), index=3),
        RouteRule("/x", "SPACED", methods=("A B",), index=4),
    ]
    assert check(rules, "A B", "", "/x").rule is rules[1]
    assert check(rules, "A B", "h", "/x").rule is rules[4]
    assert check(rules, "GET", "b", "/z /y").rule is rules[2]
    assert check(rules, "GET", "b", "x /y").rule is rules[3]
    assert check(rules, "A B", "h", "/v1/y").rule is None  # "A" " " "B" " " "h /v1/y": no glob matches that


@settings(max_examples=1000, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.text(alphabet=" /a*", max_size=6),
            st.lists(st.sampled_from(["A", "B", "A B", "B A"]), max_size=2).map(tuple),
            st.none() | st.sampled_from(["*", "a", "a b", "b /a", "* *"]),
        ),
        max_size=6,
    ),
    method=st.sampled_from(["A", "B", "A B", "A B A", "B A"]),
    host=st.sampled_from(["", "a", "b", "A"]),
    path=st.text(alphabet=" /ab", max_size=8),
)
def test_spaces_anywhere(
    specs: list[tuple[str, tuple[str, ...], str | None]], method: str, host: str, path: str
) -> None:
    rules = [RouteRule(p, f"C{i}", methods=m, host=h, index=i) for i, (p, m, h) in enumerate(specs)]
    check(rules, method, host, path)


@pytest.mark.parametrize(
    ("glob", "segments"),
    [
        ("/v1/models/m/**", ("", "v1", "models", "m")),
        ("/v1/models/m/**/x", ("", "v1", "models", "m")),
        ("/v1/models/m/**x", ("", "v1", "models")),  # matches /v1/models/mx
        ("/api/team/*/export/**", ("", "api", "team")),
        ("/v1/m*", ("", "v1")),
        ("/files/", ("", "files")),
        ("/files/**/", ("", "files")),
        ("/a", ("", "a")),
        ("/**", ("",)),
        ("/", ("", "")),
        ("*/x", ()),
        ("**", ()),
        ("", ("",)),
    ],
)
def test_literal_segments(glob: str, segments: tuple[str, ...]) -> None:
    import geofence.routing.index as route_index

    assert route_index.literal_segments(glob) == segments


def test_every_alternation_is_compiled_when_the_policy_loads_and_root_rules_only_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rules filed at the root lie on every path's way: compiled once, not into every node's alternation; and
    nothing is compiled on the request path, whatever paths clients walk."""
    rules = [RouteRule(f"**/secret{i}/**", "RESTRICTED", index=i) for i in range(50)]
    rules += [RouteRule(f"/api{i}/**", "RESTRICTED", index=50 + i) for i in range(200)]
    compiled: list[str] = []
    real = re.compile

    def counting(pattern: str, flags: int = 0) -> re.Pattern[str]:
        compiled.append(pattern)
        return real(pattern, flags)

    monkeypatch.setattr(re, "compile", counting)
    table = RouteTable(rules, "EAR99")
    alternations = [p for p in compiled if p.startswith("(?P<r")]
    assert sum(p.count("secret") for p in alternations) <= 2 * 50  # the root's alternation, and the all-rules one
    compiled.clear()
    for i in range(200):
        assert table.classify("GET", "", f"/api{i}/new/{i}").export_class == "RESTRICTED"
    assert table.classify("GET", "", "/api7/x/secret3/y").rule == rules[3]  # a root rule first in policy order
    assert compiled == []


def test_the_all_rules_alternation_is_compiled_only_for_a_method_with_a_space() -> None:
    """No client sends such a method honestly: its alternation of every rule is not built at load."""
    table = RouteTable([RouteRule(f"/api{i}/**", "RESTRICTED", index=i) for i in range(50)], "EAR99")
    assert table._index._everything is None
    assert table.classify("GET", "", "/api7/x").export_class == "RESTRICTED"
    assert table._index._everything is None
    assert table.classify("G ET", "", "/api7/x").export_class in ("RESTRICTED", "EAR99")
    assert table._index._everything is not None
