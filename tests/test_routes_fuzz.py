"""Property-based: classification never raises, and no spelling of a controlled path is less controlled."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.routing.routes import Route, RouteTable
from geofence.routing.rule import RouteRule

MODEL = {"equals": ("mythos-5",), "matches": ("mythos-5*",)}
RULES = [
    RouteRule("/public/**", "L", index=0),  # a lenient rule that a spelling could try to reach
    RouteRule("/v1/models/mythos-5/**", "C", index=1),
    RouteRule("/v1/messages", "C", methods=("POST",), json_field="model", **MODEL, index=2),
    RouteRule("/v1/messages/batches", "C", methods=("POST",), json_field="requests[*].params.model", **MODEL),
    RouteRule("/v1/realtime", "C", query_param="model", **MODEL, index=4),
    RouteRule("/v1/proxy/*", "C", header="x-model", **MODEL, index=5),
    RouteRule("/weights/*/files/", "C", index=6),
    RouteRule("/**", "C", host="api.example.com", index=7),
    RouteRule("/**", "L", host="*.example.org", index=8),
]
TABLE = RouteTable(RULES, "D", ["/healthz", "/public/status"])

BODY = json.dumps({"model": "Mythos-5", "requests": [{"params": {"model": "mythos-5-x"}}]}).encode()
QUERY = b"model=mythos-5"
HEADERS = [(b"x-model", b"mythos-5")]

# Canonical paths that a controlled rule matches, with the method it is sent with.
CONTROLLED = st.one_of(
    st.tuples(st.just("GET"), st.lists(st.sampled_from(["a", "b", "x.json"]), max_size=3)).map(
        lambda t: (t[0], "/".join(["/v1/models/mythos-5", *t[1]]))
    ),
    st.sampled_from(
        [
            ("POST", "/v1/messages"),
            ("POST", "/v1/messages/batches"),
            ("WEBSOCKET", "/v1/realtime"),
            ("GET", "/v1/proxy/anything"),
            ("GET", "/weights/w1/files"),
        ]
    ),
)
SEGMENT = st.text(alphabet="abcz-_~.%", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))


def classes(route: Route) -> set[str]:
    return {r.params.classify(BODY, QUERY, HEADERS)[0] if r.params else r.export_class for r in (route, *route.also)}


@st.composite
def respelled(draw: st.DrawFn, path: str) -> str:
    """*path* with slashes doubled, dot segments and detours added, a trailing slash: the same route."""
    segments = path.split("/")[1:]
    out = ""
    for segment in segments:
        out += draw(st.sampled_from(["/", "//", "/./", "///"]))
        if draw(st.booleans()):
            out += draw(SEGMENT) + draw(st.sampled_from(["/../", "//../", "/./../"]))
        out += segment
    return out + draw(st.sampled_from(["", "/", "//", "/.", "/./"]))


@settings(max_examples=300)
@given(data=st.data(), request=CONTROLLED, root=st.sampled_from(["", "/api", "/a/b", "/public", "/healthz"]))
def test_no_spelling_of_a_controlled_path_is_less_controlled(
    data: st.DataObject, request: tuple[str, str], root: str
) -> None:
    method, path = request
    spelled = data.draw(respelled(path))
    route = TABLE.classify(method, "", root + spelled, root)
    assert "C" in classes(route), (route, spelled)
    assert route.exempt is None


@given(
    host=st.sampled_from(["api.example.com", "API.EXAMPLE.COM", "Api.Example.Com.", "api.example.com.:8443"]),
    path=st.text(alphabet="/.ab", max_size=12),
)
def test_host_spellings_of_a_controlled_host_stay_controlled(host: str, path: str) -> None:
    assert "C" in classes(TABLE.classify("GET", host, path))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["model", "requests", "params", "x"]),
                                                                 inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=500)
@given(
    method=st.text(max_size=8),
    host=st.text(max_size=30),
    path=st.text(max_size=60),
    root_path=st.text(max_size=10),
    body=st.none() | st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()),
    query=st.binary(max_size=40),
    headers=st.lists(st.tuples(st.sampled_from([b"x-model", b"X-Model", b"host", b"x"]), st.binary(max_size=20))),
)
def test_classification_never_raises(
    method: str, host: str, path: str, root_path: str, body: bytes | None, query: bytes, headers: Any
) -> None:
    requests = [(method, path), (method, root_path + path), ("POST", "/v1/messages" + path[:2])]
    for m, p in [*requests, ("POST", "/v1/messages/batches"), ("GET", "/v1/realtime"), ("GET", "/v1/proxy/x")]:
        route = TABLE.classify(m, host, p, root_path)
        for r in (route, *route.also):
            assert r.export_class in {"C", "L", "D"}
            if r.params is not None:
                export_class, why = r.params.classify(body, query, headers)
                assert export_class in {"C", "L", "D"} and why
