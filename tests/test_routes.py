"""Route classification: globs, methods, hosts, first match wins, JSON body rules failing closed."""

from __future__ import annotations

import json

import pytest

from geofence.routing.routes import ParamRule, Route, RouteTable, compile_glob, normalise_path
from geofence.routing.rule import DEFAULT_MAX_BODY, RouteRule

RULES = [
    RouteRule("/v1/models/mythos-5/**", "4E091", index=0),
    RouteRule(
        "/v1/messages",
        "4E091",
        methods=("POST",),
        json_field="model",
        equals=("mythos-5",),
        matches=("mythos-5*",),
        max_body_bytes=64,
        index=1,
    ),
    RouteRule("/v1/messages", "5D002", methods=("POST",), json_field="tool.name", equals=("crypto",), index=2),
    RouteRule("/v1/*/export", "5D002", index=3),
    RouteRule("/admin/**", "ADMIN", host="*.internal.example", index=4),
    RouteRule("/v1/messages", "EAR99-LOGGED", methods=("POST",), index=5),
]
TABLE = RouteTable(RULES, "EAR99")


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("GET", "api.example", "/v1/models/mythos-5", "4E091"),
        ("GET", "api.example", "/v1/models/mythos-5/", "4E091"),
        ("DELETE", "api.example", "/v1/models/mythos-5/a/b/c", "4E091"),
        ("GET", "api.example", "/v1/models/mythos-50", "EAR99"),
        ("GET", "api.example", "/v1/models/mythos-5x/y", "EAR99"),
        ("GET", "api.example", "/v1/anything/export", "5D002"),
        ("GET", "api.example", "/v1/a/b/export", "EAR99"),  # * is one segment
        ("GET", "ops.internal.example", "/admin/users", "ADMIN"),
        ("GET", "api.example", "/admin/users", "EAR99"),
        ("GET", "a.b.internal.example", "/admin/users", "EAR99"),  # * in a host is one label
        ("GET", "api.example", "/v1/messages", "EAR99"),  # method filter
        ("GET", "api.example", "/v1/models/mythos-5/x\n", "4E091"),  # a decoded newline does not escape **
        ("GET", "api.example", "/v1/anything\n/export", "5D002"),
    ],
)
def test_path_rules(method: str, host: str, path: str, expected: str) -> None:
    route = TABLE.classify(method, host, path)
    assert route.params is None and route.also == ()
    assert route.export_class == expected


@pytest.mark.parametrize(
    "path",
    ["//v1/models/mythos-5/x", "/v1/models/./mythos-5/x", "/v1/other/../models/mythos-5/x", "/v1//models//mythos-5//x"],
)
def test_every_spelling_of_a_path_is_classified(path: str) -> None:
    # The app may route the raw path or its normalised form: the request must pass both classes.
    route = TABLE.classify("GET", "api.example", path)
    assert route.export_class == "4E091"  # the canonical spelling comes first
    assert [r.export_class for r in route.also] == ["EAR99"]


def test_first_match_wins_and_names_the_rule() -> None:
    table = RouteTable([RouteRule("/a/**", "ONE", index=0), RouteRule("/a/b", "TWO", index=1)], "D")
    assert table.classify("GET", "", "/a/b") == Route("ONE", table.rules[0], None, None)
    assert table.classify("GET", "", "/c") == Route("D", None, None, None)


def body(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (body({"model": "mythos-5"}), "4E091"),
        (body({"model": "MYTHOS-5-20260601"}), "4E091"),  # matches are case-insensitive globs
        (body({"model": "Mythos-5"}), "4E091"),
        (body({"model": "haiku"}), "EAR99-LOGGED"),  # falls through to the next matching rule
        (body({"model": "haiku", "tool": {"name": "crypto"}}), "5D002"),  # second body rule, dotted path
        (b'{"model": "haiku", "tool": {"name": "x", "name": "crypto"}}', "5D002"),  # nested duplicate: fail closed
        (body({}), "EAR99-LOGGED"),
        (body({"model": 5}), "EAR99-LOGGED"),
        # Fail closed: the class of the rule that could not be evaluated.
        (b"not json", "4E091"),
        (b"", "4E091"),
        (body(["model", "mythos-5"]), "4E091"),
        (b'{"model": "haiku", "model": "mythos-5"}', "4E091"),  # duplicate key: parsers disagree on which wins
        (body({"model": "haiku", "pad": "x" * 100}), "4E091"),  # over max_body_bytes
        (None, "4E091"),  # the middleware could not buffer it
        (b"[" * 100_000, "4E091"),  # deep nesting
    ],
)
def test_body_rules(payload: bytes | None, expected: str) -> None:
    route = TABLE.classify("POST", "api.example", "/v1/messages")
    assert isinstance(route.params, ParamRule)
    assert route.export_class == "4E091"  # before the body is read: the fail-closed answer
    assert [p.rule.index for p in route.params.candidates] == [1, 2, 5]
    assert route.params.needs_body and route.params.max_body_bytes == DEFAULT_MAX_BODY  # the largest limit
    assert route.params.classify(payload, b"", ())[0] == expected


def test_body_rule_with_nothing_after_it_falls_back_to_default() -> None:
    table = RouteTable([RouteRule("/m", "C", json_field="model", equals=("x",))], "D")
    params = table.classify("POST", "", "/m").params
    assert params is not None
    assert params.classify(b'{"model": "y"}', b"", ()) == ("D", "parameters match no rule: default class")
    assert params.classify(b'{"model": "x"}', b"", ())[0] == "C"


def test_many_rules_compile_to_one_pattern() -> None:
    rules = [RouteRule(f"/r{i}/**", f"C{i}", index=i) for i in range(500)]
    table = RouteTable(rules, "D")
    assert table.classify("GET", "", "/r499/x").export_class == "C499"
    assert table.classify("GET", "", "/r0").export_class == "C0"
    assert table.classify("GET", "", "/r500").export_class == "D"


def test_exempt_paths() -> None:
    table = RouteTable([RouteRule("/**", "C", index=0)], "D", ["/healthz", "/public/**"])
    assert table.classify("GET", "", "/healthz").exempt == "path matches exempt /healthz"
    assert table.classify("GET", "", "/public/a/b").exempt == "path matches exempt /public/**"
    assert table.classify("GET", "", "/public//x").exempt is not None  # every spelling is exempt
    assert table.classify("GET", "", "/public/../weights").exempt is None  # the raw path is, its target is not
    assert table.classify("GET", "", "/healthz2").exempt is None
    assert table.classify("GET", "", "/healthz").export_class == "C"


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/b/c", False),
        ("/a/*.json", "/a/x.json", True),
        ("/a/**", "/a", True),
        ("/a/**", "/ab", False),
        ("/a/**/z", "/a/z", True),
        ("/a/**/z", "/a/b/c/z", True),
        ("/a.b", "/aXb", False),  # regex metacharacters are literal
    ],
)
def test_glob(glob: str, path: str, matches: bool) -> None:
    import re

    assert bool(re.fullmatch(compile_glob(glob), path)) is matches


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/a/b", "/a/b"),
        ("//a//b/", "/a/b"),
        ("/a/b/", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../../b", "/b"),
        ("/", "/"),
        ("/..", "/"),
        ("", "/"),
    ],
)
def test_normalise_path(path: str, normal: str) -> None:
    assert normalise_path(path) == normal
