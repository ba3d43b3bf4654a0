"""Every spelling of a request the app might route is classified: root_path, slashes, dot segments, hosts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from geofence.cli.demo import RunningServer
from geofence.routing.routes import Route, RouteTable, canonical_host, path_spellings
from geofence.routing.rule import RouteRule

RULES = [
    RouteRule("/v1/messages", "4E091", methods=("POST",), json_field="model", equals=("mythos-5",), index=0),
    RouteRule("/v1/models/mythos-5/**", "4E091", index=1),
    RouteRule("/public/**", "EAR99", host="docs.example.com", index=2),
    RouteRule("/**", "4E091", host="api.example.com", index=3),
    RouteRule("/files/", "5D002", index=4),
]
TABLE = RouteTable(RULES, "EAR99", ["/healthz"])


def spellings(route: Route) -> list[Route]:
    return [route, *route.also]


def classes(route: Route, body: bytes = b'{"model": "mythos-5"}') -> set[str]:
    return {r.params.classify(body, b"", ())[0] if r.params else r.export_class for r in spellings(route)}


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/api/v1/messages", "/api"),  # uvicorn --root-path /api, Starlette Mount("/api", ...): path includes it
        ("/api/v1/messages", "/api/"),
        ("/v1/messages", "/api"),  # older servers: the path without root_path, routed as given
        ("/v1/messages/", ""),
        ("/v1/messages//", ""),
        ("//v1//messages", ""),
        ("/v1/x/../messages", ""),
        ("/v1/./messages/.", ""),
        ("/api/v1/messages/", "/api"),
        ("/a/b/v1/messages", "/a/b"),
    ],
)
def test_every_spelling_of_a_controlled_path_is_controlled(path: str, root_path: str) -> None:
    route = TABLE.classify("POST", "", path, root_path)
    assert "4E091" in classes(route)
    assert classes(route, b'{"model": "haiku"}') == {"EAR99"}


def test_external_paths_are_classified_too() -> None:
    # An operator may write rules for the external path (prefix included): that spelling must pass as well.
    table = RouteTable([RouteRule("/api/v1/weights/**", "4E091")], "EAR99")
    route = table.classify("GET", "", "/api/v1/weights/x", "/api")
    assert {r.export_class for r in spellings(route)} == {"EAR99", "4E091"}


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/api/v1/m", "/api", ("/v1/m", "/api/v1/m")),
        ("/api", "/api", ("/", "/api")),
        # Not under the root: as given; and what Litestar routes, the rest after the root's first occurrence.
        ("/apiv1/m", "/api", ("/apiv1/m", "/v1/m")),
        ("/x/api/v1/m", "/api", ("/x/api/v1/m", "/v1/m")),  # hypercorn --root-path leaves it out of path
        ("/v1/m/", "", ("/v1/m", "/v1/m/")),
        ("/v1/m", "/", ("/v1/m",)),
        ("", "", ("/", "")),
    ],
)
def test_path_spellings(path: str, root_path: str, expected: tuple[str, ...]) -> None:
    assert path_spellings(path, root_path) == expected


def test_root_path_classifies_the_apps_route_first() -> None:
    route = TABLE.classify("GET", "", "/v1/models/mythos-5", "/v1/models")
    assert route.export_class == "EAR99"  # the app routes "/mythos-5": no rule
    assert [r.export_class for r in route.also] == ["4E091"]  # the full path is controlled: it must pass too


@pytest.mark.parametrize(
    "host", ["api.example.com", "API.Example.COM", "api.example.com.", "api.example.com.:8443", "API.EXAMPLE.COM:80"]
)
def test_host_spellings_match_the_rule(host: str) -> None:
    route = TABLE.classify("GET", host, "/anything")
    assert route.export_class == "4E091" and route.rule is RULES[3]


def test_a_lenient_host_rule_needs_the_canonical_host() -> None:
    assert TABLE.classify("GET", "docs.example.com", "/public/a") == Route("EAR99", RULES[2], None, None)
    # An app matching hosts case-sensitively (Starlette's Host) would not route "DOCS.example.com" to the docs
    # app: that spelling falls through to the stricter rules, and must pass too.
    route = TABLE.classify("GET", "DOCS.example.com.", "/public/a")
    assert route.rule is RULES[2] and [r.export_class for r in route.also] == ["EAR99"]
    # A space is no host (and once let "docs.example.com /public" match the docs rule for any path).
    assert TABLE.classify("GET", "docs.example.com /public", "/v1/models/mythos-5").export_class == "4E091"
    assert TABLE.classify("GET", "docs.example.com /x", "/public/a").rule is None


@pytest.mark.parametrize(
    ("host", "canonical"),
    [("API.Example.COM.", "api.example.com"), ("[::1]:8443", "[::1]"), ("[::1", ""), ("", ""), ("h:80", "h")],
)
def test_canonical_host(host: str, canonical: str) -> None:
    assert canonical_host(host) == canonical


def test_a_rule_with_a_trailing_slash_matches_both() -> None:
    assert TABLE.classify("GET", "", "/files/").export_class == "5D002"
    assert TABLE.classify("GET", "", "/files").export_class == "5D002"
    doubled = TABLE.classify("GET", "", "/files//")  # the canonical spelling matches; as sent, nothing does
    assert doubled == Route("5D002", RULES[4], None, None, (Route("EAR99", None, None, None),))


def test_exempt_only_when_every_spelling_is() -> None:
    assert TABLE.classify("GET", "", "/healthz").exempt == "path matches exempt /healthz"
    assert TABLE.classify("GET", "", "/api/healthz", "/api").exempt is None  # the full path is not exempt
    assert TABLE.classify("GET", "", "/healthz/").exempt is None


def test_memo_is_bounded_by_bytes_and_keeps_hot_entries() -> None:
    table = RouteTable(RULES, "EAR99")
    hot = table.classify("GET", "", "/v1/models/mythos-5")
    memo = table._memo
    for i in range(3000):
        table.classify("GET", "", f"/junk/{i}/" + "x" * 4000)
        assert table.classify("GET", "", "/v1/models/mythos-5") is hot  # a hot entry survives the flood
    assert memo.size_bytes <= memo.max_bytes
    assert len(memo) < 3000


def test_memo_key_includes_root_path() -> None:
    table = RouteTable(RULES, "EAR99")
    assert table.classify("GET", "", "/v1/models/mythos-5").also == ()
    assert table.classify("GET", "", "/v1/models/mythos-5", "/v1/models").also != ()


def _recorder(seen: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        else:
            seen.append(scope)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_starlette_mount_scope(anyio_backend: str) -> None:
    """What a middleware mounted inside Starlette's Mount("/api", ...) is given, classified as the app routes."""
    seen: list[dict[str, Any]] = []
    outer = Starlette(routes=[Mount("/api", app=_recorder(seen))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://t") as client:
        await client.post("/api/v1/messages/", content=b"{}")
    scope = seen[0]
    assert (scope["path"], scope["root_path"]) == ("/api/v1/messages/", "/api")
    route = TABLE.classify("POST", "", scope["path"], scope["root_path"])
    assert "4E091" in classes(route)


def test_uvicorn_root_path_scope() -> None:
    """uvicorn --root-path puts the prefix in both path and root_path; the app routes the remainder."""
    seen: list[dict[str, Any]] = []
    with RunningServer(_recorder(seen), root_path="/api") as server:
        httpx.post(f"http://127.0.0.1:{server.port}/v1/messages", content=b"{}")
    scope = seen[0]
    assert (scope["path"], scope["root_path"]) == ("/api/v1/messages", "/api")
    assert "4E091" in classes(TABLE.classify("POST", "", scope["path"], scope["root_path"]))
