"""Parameter rules: JSON field paths with array elements, query parameters and headers, failing closed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from geofence.policy.load import PolicyError, parse_policy
from geofence.routing.routes import RouteTable
from geofence.routing.rule import RouteRule, parse_field

MODELS = {"equals": ("mythos-5",), "matches": ("mythos-5-*",)}
TABLE = RouteTable(
    [
        RouteRule("/v1/messages/batches", "4E091", methods=("POST",), json_field="requests[*].params.model", **MODELS),
        RouteRule("/v1/first", "4E091", methods=("POST",), json_field="[0].model", **MODELS),
        RouteRule("/v1/second", "4E091", methods=("POST",), json_field="items[1]", **MODELS),
        RouteRule("/v1/realtime", "4E091", query_param="model", index=3, **MODELS),
        RouteRule("/v1/realtime", "5D002", query_param="tool", equals=("crypto",)),
        RouteRule("/v1/proxy/**", "4E091", header="X-Model", **MODELS),
        RouteRule("/v1/proxy/**", "LOGGED"),
    ],
    "EAR99",
)


def classify(
    method: str, path: str, body: Any = None, query: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
) -> str:
    route = TABLE.classify(method, "", path)
    assert route.params is not None
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return route.params.classify(raw, query, headers)[0]


def requests(*models: object) -> dict[str, Any]:
    return {"requests": [{"custom_id": str(i), "params": {"model": m}} for i, m in enumerate(models)]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (requests("haiku", "mythos-5"), "4E091"),  # any element
        (requests("MYTHOS-5-20260601"), "4E091"),
        (requests("haiku", "haiku"), "EAR99"),
        (requests(), "EAR99"),
        ({"requests": [{"custom_id": "x"}, 5, None, {"params": []}]}, "EAR99"),  # elements without the field
        ({"requests": {"params": {"model": "mythos-5"}}}, "EAR99"),  # not an array: the field is absent
        (b'{"requests": [{"params": {"model": "haiku", "model": "mythos-5"}}]}', "4E091"),  # duplicate: closed
        (b'{"requests": [], "requests": [{"params": {"model": "mythos-5"}}]}', "4E091"),
        (b'{"requests": [], "x": {"requests": 1, "requests": 2}}', "4E091"),  # a path key twice, anywhere
        (b'{"requests": [], "other": 1, "other": 2}', "EAR99"),  # a key off the path may repeat
        (b"[]", "4E091"),  # not an object
        (b'{"requests": [{"params": {"model": "\\u006dythos-5"}}]}', "4E091"),  # escapes decoded as apps do
    ],
)
def test_array_fields(body: Any, expected: str) -> None:
    assert classify("POST", "/v1/messages/batches", body) == expected


def test_indexed_and_root_array_fields() -> None:
    assert classify("POST", "/v1/first", [{"model": "mythos-5"}, {"model": "haiku"}]) == "4E091"
    assert classify("POST", "/v1/first", [{"model": "haiku"}, {"model": "mythos-5"}]) == "EAR99"
    assert classify("POST", "/v1/first", {"model": "mythos-5"}) == "4E091"  # not an array: fail closed
    assert classify("POST", "/v1/second", {"items": ["haiku", "mythos-5"]}) == "4E091"
    assert classify("POST", "/v1/second", {"items": ["mythos-5"]}) == "EAR99"  # no element 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"model=mythos-5", "4E091"),
        (b"model=Mythos-5-Preview", "4E091"),
        (b"mod%65l=mythos%2D5", "4E091"),  # names and values percent-decoded, as frameworks do
        (b"model=gpt-realtime", "EAR99"),
        (b"", "EAR99"),
        (b"Model=mythos-5", "EAR99"),  # names are case-sensitive in every framework
        (b"model=gpt&model=mythos-5", "4E091"),  # given twice: frameworks disagree on which wins
        (b"model=gpt&model=gpt", "4E091"),
        (b"x=1;model=mythos-5", "4E091"),  # some frameworks split on ';' too
        (b"model=gpt;model=mythos-5", "4E091"),
        (b"model=gpt&x=1;y=2", "EAR99"),  # ';' elsewhere reads the same either way
        (b"model=gpt&tool=crypto", "5D002"),  # the next parameter rule
        (b"model=gpt&tool=crypto&tool=x", "5D002"),  # that rule's parameter twice: its class
        (b"model", "EAR99"),  # a blank value is kept, and matches nothing
        (b"model=mythos-5-\xff", "4E091"),  # raw non-ASCII bytes read as latin-1, like Starlette
    ],
)
def test_query_parameters(query: bytes, expected: str) -> None:
    assert classify("WEBSOCKET", "/v1/realtime", query=query) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-model", b"mythos-5")], "4E091"),
        ([(b"x-model", b" mythos-5-20260601 ")], "4E091"),
        ([(b"X-Model", b"MYTHOS-5-x")], "4E091"),  # header names are case-insensitive
        ([(b"x-model", b"haiku")], "LOGGED"),  # no match: the next rule
        ([], "LOGGED"),
        ([(b"x-model", b"haiku"), (b"x-model", b"mythos-5")], "4E091"),  # twice: fail closed
        ([(b"x-model", b"haiku"), (b"X-MODEL", b"haiku")], "4E091"),
        ([(b"x-model-2", b"mythos-5")], "LOGGED"),
    ],
)
def test_headers(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    assert classify("GET", "/v1/proxy/x", headers=headers) == expected


def test_parameter_routes_say_what_they_need() -> None:
    assert TABLE.needs_query and TABLE.needs_headers and not TABLE.needs_host
    realtime = TABLE.classify("GET", "", "/v1/realtime").params
    assert realtime is not None and not realtime.needs_body and realtime.max_body_bytes == 0
    explained = realtime.classify(None, b"model=mythos-5", ())
    assert explained == ("4E091", "query model = 'mythos-5': routes[3] * /v1/realtime with query model -> 4E091")
    assert realtime.classify(None, b"a=1", ())[0] == "EAR99"  # no body needed, none read
    assert not RouteTable([RouteRule("/x", "C")], "D").needs_query


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("model", ("model",)),
        ("a.b.c", ("a", "b", "c")),
        ("requests[*].params.model", ("requests", None, "params", "model")),
        ("[0].model", (0, "model")),
        ("a[2][*]", ("a", 2, None)),
    ],
)
def test_parse_field(text: str, steps: tuple[object, ...]) -> None:
    assert parse_field(text) == steps


MINIMAL: dict[str, Any] = {"classes": {"EAR99": {}, "C": {}}}


def problems(*routes: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as raised:
        parse_policy({**MINIMAL, "routes": list(routes)})
    return [str(p) for p in raised.value.problems]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"query_param": "model"}, "routes[0]: query_param needs equals or matches"),
        ({"header": "x-model"}, "routes[0]: header needs equals or matches"),
        ({"equals": ["x"]}, "routes[0]: equals/matches need json_field, query_param or header"),
        (
            {"json_field": "model", "query_param": "model", "equals": ["x"]},
            "routes[0]: json_field and query_param exclude each other: a rule reads one parameter",
        ),
        ({"json_field": "a..b", "equals": ["x"]}, "routes[0].json_field: 'a..b' is not a JSON field path"),
        ({"json_field": "a[x]", "equals": ["x"]}, "routes[0].json_field: 'a[x]' is not a JSON field path"),
        ({"header": "x model", "equals": ["x"]}, "routes[0].header: 'x model' is not an HTTP header name"),
        ({"query_param": "", "equals": ["x"]}, "routes[0].query_param: must not be empty"),
        (
            {"query_param": "m", "equals": ["x"], "max_body_bytes": 10},
            "routes[0].max_body_bytes: applies to json_field rules only",
        ),
        ({"host": "api.example.com:8443"}, "routes[0].host: 'api.example.com:8443' is not a host name"),
        ({"path": "/v1//messages"}, "routes[0].path: '/v1//messages' has empty, '.' or '..' segments"),
        ({"path": "/v1/./messages"}, "routes[0].path: '/v1/./messages' has empty, '.' or '..' segments"),
    ],
)
def test_policy_validation(route: dict[str, Any], expected: str) -> None:
    found = problems({"path": "/x", "class": "C", **route})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_policy_compiles_parameter_rules() -> None:
    policy = parse_policy(
        {
            **MINIMAL,
            "routes": [
                {"path": "/rt", "query_param": "model", "matches": ["Mythos-*"], "class": "C"},
                {"path": "/h", "header": "X-Model", "equals": ["m"], "class": "C", "host": "API.Example.COM."},
            ],
        }
    )
    first, second = policy.routes.rules
    assert (first.query_param, first.matches) == ("model", ("Mythos-*",))
    assert (second.header, second.host) == ("X-Model", "api.example.com")  # the host as requests are compared
    route = policy.routes.classify("GET", "", "/rt")
    assert route.params is not None and route.params.classify(None, b"model=MYTHOS-5", ())[0] == "C"
    route = policy.routes.classify("GET", "api.example.com:443", "/h")
    assert route.params is not None and route.params.classify(None, b"", [(b"x-model", b"m")])[0] == "C"
