"""What a per-endpoint helper enforces is recorded like the middleware's own decisions (log line, audit trail,
``on_decision``), and an allowed response of a class that can deny anyone is marked ``Cache-Control: private``
even when the route's own class restricts nobody — for every helper: Starlette, FastAPI, Litestar, Django.
``check_class`` alone only asks: it records and marks nothing."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket  # FastAPI resolves the endpoint's annotations in this module

from geofence import Decision, GeofenceMiddleware, check_class

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(country_db: Path, audit: Path) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "defaults": {"class": "OPEN"},  # the route's own class restricts nobody: the middleware marks nothing
        "classes": {"OPEN": {"unknown_location": "allow"}, "4E091": {"allow_destinations": ["US"]}},
        "audit": {"path": str(audit), "include": "controlled"},
        "proxies": {"trusted": ["10.0.0.0/8"]},  # whose X-Request-ID is taken (request/ids.py)
    }


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from geofence import requires_class

    @requires_class("4E091")
    async def weights(request: Request) -> PlainTextResponse:
        return PlainTextResponse("weights")

    async def ask(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(check_class(request.scope, "4E091").allowed))

    return Starlette(routes=[Route("/weights", weights), Route("/ask", ask)])


def fastapi_app() -> Any:
    from fastapi import Depends, FastAPI
    from fastapi.responses import PlainTextResponse

    from geofence import install_handler, require_class

    app = FastAPI()
    install_handler(app)

    @app.get("/weights", dependencies=[Depends(require_class("4E091"))], response_class=PlainTextResponse)
    async def weights() -> str:
        return "weights"

    return app


def litestar_app() -> Any:
    pytest.importorskip("litestar")
    from litestar import Litestar, get

    from geofence.litestar import exception_handlers, require_class

    @get("/weights", guards=[require_class("4E091")], sync_to_thread=False)
    def weights() -> str:
        return "weights"

    return Litestar([weights], exception_handlers=exception_handlers, logging_config=None)  # keep pytest's capture


def django_app() -> Any:
    pytest.importorskip("django")
    from .e2e import django_app

    return django_app.application()


APPS: dict[str, tuple[Callable[[], Any], str]] = {
    "starlette": (starlette_app, "/weights"),
    "fastapi": (fastapi_app, "/weights"),
    "litestar": (litestar_app, "/weights"),
    "django": (django_app, "/weights-sync"),
}


async def get(app: Any, path: str, peer: str) -> httpx.Response:
    """A request from *peer* through the trusted proxy, which gives it a request id."""
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path, headers={"x-forwarded-for": peer, "x-request-id": f"req-{peer}"})


def records(audit: Path) -> list[tuple[str, str, str]]:
    if not audit.exists():
        return []
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    return [(r["outcome"], r["class"], r["request_id"]) for r in lines]


@pytest.mark.parametrize("framework", sorted(APPS))
async def test_a_helpers_decisions_are_recorded_and_its_allowed_responses_private(
    framework: str, country_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory, path = APPS[framework]
    seen: list[Decision] = []
    audit = tmp_path / "audit.jsonl"
    middleware = GeofenceMiddleware(
        factory(), config=config(country_db, audit), on_decision=lambda decision, scope: seen.append(decision)
    )
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        allowed = await get(middleware, path, "8.8.8.8")
        denied = await get(middleware, path, "5.8.1.1")
    middleware.close()
    assert allowed.status_code == 200 and "private" in allowed.headers["cache-control"]
    assert denied.status_code == 451 and denied.json()["request_id"] == "req-5.8.1.1"
    assert [(d.allowed, d.export_class) for d in seen] == [(False, "4E091")]
    logged = [r.getMessage() for r in caplog.records if r.name == "geofence.decision"]
    assert len(logged) == 1 and logged[0].startswith("deny GET") and "class=4E091" in logged[0]
    assert records(audit) == [("allow", "4E091", "req-8.8.8.8"), ("deny", "4E091", "req-5.8.1.1")]
    assert middleware.stats[("deny", "4E091", "destination_not_allowed")] == 1


async def test_check_class_alone_records_and_marks_nothing(country_db: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    seen: list[Decision] = []
    middleware = GeofenceMiddleware(
        starlette_app(), config=config(country_db, audit), on_decision=lambda decision, scope: seen.append(decision)
    )
    for peer, answer in (("8.8.8.8", "True"), ("5.8.1.1", "False")):
        response = await get(middleware, "/ask", peer)
        assert response.text == answer and "cache-control" not in response.headers
    middleware.close()
    assert seen == [] and records(audit) == []


async def test_an_audit_failure_under_on_failure_deny_refuses_what_a_helper_allowed(
    country_db: Path, tmp_path: Path
) -> None:
    policy = config(country_db, tmp_path / "audit.jsonl")
    policy["audit"]["on_failure"] = "deny"
    middleware = GeofenceMiddleware(starlette_app(), config=policy)
    state = middleware._live.state
    assert state is not None and state.audit is not None
    state.audit.submit = lambda *args: False  # type: ignore[method-assign]  # the queue refuses the record
    response = await get(middleware, "/weights", "8.8.8.8")
    middleware.close()
    assert response.status_code == 503 and response.json()["reasons"][0]["code"] == "audit_unavailable"


async def enforcing_app(scope: Any, receive: Any, send: Any) -> None:
    """A raw ASGI app that enforces 4E091 itself, answering ``public`` (which geofence must make private)."""
    from geofence.integrations import enforce_class

    status = 200 if enforce_class(scope, "4E091").allowed else 451
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"cache-control", b"public, max-age=600")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"weights"})


async def test_a_raw_asgi_app_enforcing_a_class_gets_its_response_marked_private(
    country_db: Path, tmp_path: Path
) -> None:
    """No helper object exists before the first request (Django imports its URLconf on the first request):
    the marking must not depend on when a helper was created."""
    middleware = GeofenceMiddleware(enforcing_app, config=config(country_db, tmp_path / "audit.jsonl"))
    response = await get(middleware, "/weights", "8.8.8.8")
    middleware.close()
    assert response.status_code == 200 and response.headers["cache-control"] == "private, max-age=600"


async def test_djangos_own_cache_never_stores_a_helper_allowed_response(country_db: Path, tmp_path: Path) -> None:
    middleware = GeofenceMiddleware(django_app(), config=config(country_db, tmp_path / "audit.jsonl"))
    allowed = await get(middleware, "/cached", "8.8.8.8")
    assert allowed.status_code == 200 and allowed.headers["cache-control"] == "private, max-age=600"
    denied = await get(middleware, "/cached", "5.8.1.1")  # not answered from Django's cache
    middleware.close()
    assert denied.status_code == 451


@pytest.mark.parametrize("failure", ["stale database", "failing audit trail"])
async def test_what_refuses_the_middlewares_decisions_refuses_a_helpers(
    failure: str, country_db: Path, tmp_path: Path
) -> None:
    policy = config(country_db, tmp_path / "audit.jsonl")
    policy["geoip"].update(max_age_days=1, on_stale="deny") if failure == "stale database" else None
    policy["audit"]["on_failure"] = "deny"
    middleware = GeofenceMiddleware(starlette_app(), config=policy)
    state = middleware._live.state
    assert state is not None and state.audit is not None
    if failure == "stale database":
        state.stale_at = 0.0  # built long ago
    else:
        state.audit._sink_failed = True  # the disk is full
    response = await get(middleware, "/weights", "8.8.8.8")
    middleware.close()
    assert response.status_code == 503


async def test_an_exempt_path_does_not_exempt_a_class_the_code_demands(country_db: Path, tmp_path: Path) -> None:
    for route_class in ("OPEN", "4E091"):  # whether or not the route's own class is the demanded one
        policy = config(country_db, tmp_path / "audit.jsonl")
        policy["routes"] = [{"path": "/weights", "class": route_class}]
        policy["exempt"] = {"paths": ["/weights"]}
        middleware = GeofenceMiddleware(starlette_app(), config=policy)
        response = await get(middleware, "/weights", "5.8.1.1")
        middleware.close()
        assert response.status_code == 451, route_class


async def test_two_guards_for_one_class_record_it_once(country_db: Path, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from geofence import requires_class

    @requires_class("4E091")
    @requires_class("4E091")
    async def weights(request: Request) -> PlainTextResponse:
        return PlainTextResponse("weights")

    audit = tmp_path / "audit.jsonl"
    middleware = GeofenceMiddleware(Starlette(routes=[Route("/weights", weights)]), config=config(country_db, audit))
    transport = httpx.ASGITransport(app=middleware, client=("8.8.8.8", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/weights")).status_code == 200  # no X-Request-ID: geofence makes one
    middleware.close()
    assert [(outcome, cls) for outcome, cls, _ in records(audit)] == [("allow", "4E091")]


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_websocket_routes_are_refused_before_accept(framework: str, country_db: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient, WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect

    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import WebSocketRoute

        from geofence import requires_class

        @requires_class("4E091")
        async def echo(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text("weights")
            await websocket.close()

        app: Any = Starlette(routes=[WebSocketRoute("/ws", echo)])
    else:
        from fastapi import Depends, FastAPI

        from geofence import require_class

        app = FastAPI()

        @app.websocket("/ws", dependencies=[Depends(require_class("4E091"))])
        async def echo_fastapi(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text("weights")
            await websocket.close()

    policy = config(country_db, tmp_path / "audit.jsonl")
    for peer, allowed in (("8.8.8.8", True), ("5.8.1.1", False)):
        middleware = GeofenceMiddleware(app, config=policy)
        with TestClient(middleware, client=(peer, 40000)) as client:
            if allowed:
                with client.websocket_connect("/ws") as websocket:
                    assert websocket.receive_text() == "weights"
            else:
                with pytest.raises((WebSocketDenialResponse, WebSocketDisconnect)) as refused:
                    with client.websocket_connect("/ws"):
                        pass
                if isinstance(refused.value, WebSocketDenialResponse):  # Starlette: the denial itself
                    assert refused.value.status_code == 451
                else:  # FastAPI sends no response for a WebSocket dependency: a close before accept
                    assert refused.value.code == 1008
        middleware.close()


def test_a_blocked_by_uri_that_cannot_be_a_header_is_a_load_error(country_db: Path, tmp_path: Path) -> None:
    from geofence import PolicyError, parse_policy

    policy = config(country_db, tmp_path / "audit.jsonl")
    policy["response"] = {"blocked_by": "https://例え.jp/export"}  # a Link header is Latin-1: refuse it at load
    with pytest.raises(PolicyError, match=r"response\.blocked_by"):
        parse_policy(policy)


async def _raw(middleware: Any, method: str, path: str, peer: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request as a server may pass it (a lower-case method is passed through by uvicorn and hypercorn)."""
    import asyncio

    sent: list[Any] = []
    requested = False

    async def receive() -> Any:
        nonlocal requested
        if requested:
            await asyncio.Event().wait()  # the client stays connected
        requested = True
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"testserver")], "client": (peer, 40000)}  # fmt: skip
    await middleware(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_lower_case_get_is_marked_private_too(country_db: Path, tmp_path: Path) -> None:
    middleware = GeofenceMiddleware(enforcing_app, config=config(country_db, tmp_path / "audit.jsonl"))
    status, headers, _ = await _raw(middleware, "get", "/weights", "8.8.8.8")
    middleware.close()
    assert status == 200 and headers[b"cache-control"].startswith(b"private")


@pytest.mark.parametrize("private_cache", [True, False])
async def test_djangos_cache_never_stores_what_a_decorated_view_answers(
    private_cache: bool, country_db: Path, tmp_path: Path
) -> None:
    """Even when an outer decorator makes the response public again, or ``private_cache = false``."""
    policy = config(country_db, tmp_path / "audit.jsonl")
    policy["response"] = {"private_cache": private_cache}
    middleware = GeofenceMiddleware(django_app(), config=policy)
    for method in ("GET", "get"):
        status, _, _ = await _raw(middleware, method, "/public-cached", "8.8.8.8")
        assert status == 200
        assert (await _raw(middleware, "GET", "/public-cached", "5.8.1.1"))[0] == 451
        assert (await _raw(middleware, "GET", "/cached", "8.8.8.8"))[0] == 200
        assert (await _raw(middleware, "GET", "/cached", "5.8.1.1"))[0] == 451
    middleware.close()


async def test_every_record_of_one_request_carries_one_id(country_db: Path, tmp_path: Path) -> None:
    """The route's own record and every helper's record share one id, with or without an X-Request-ID (the
    writer thread may fix the id of the route's record after a helper did, or before: the same one either way),
    and the app reads the same id from ``geofence.request_id(scope)``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from geofence import request_id, requires_class

    @requires_class("4E091")
    @requires_class("ALLIES")
    async def weights(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request_id(request.scope))

    audit = tmp_path / "audit.jsonl"
    policy = config(country_db, audit)
    policy["classes"]["ALLIES"] = {"deny_destinations": ["CU"], "unknown_location": "allow"}
    policy["audit"]["include"] = "all"  # the route's own allowed decision is recorded too
    middleware = GeofenceMiddleware(Starlette(routes=[Route("/weights", weights)]), config=policy)
    transport = httpx.ASGITransport(app=middleware, client=("10.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        shown = []
        for headers in ({}, {"x-request-id": "bad id\r\n"}, {"x-request-id": "req-7"}):
            response = await client.get("/weights", headers={**headers, "x-forwarded-for": "8.8.8.8"})
            assert response.status_code == 200
            shown.append(response.text)
    middleware.close()
    found = records(audit)
    assert [(outcome, cls) for outcome, cls, _ in found] == [
        ("allow", "OPEN"),
        ("allow", "4E091"),
        ("allow", "ALLIES"),
    ] * 3
    ids = [rid for _, _, rid in found]
    assert ids[:3] == [shown[0]] * 3 and ids[3:6] == [shown[1]] * 3 and shown[0] != shown[1]
    assert ids[6:] == ["req-7"] * 3 and shown[2] == "req-7"


async def test_a_helper_called_after_the_response_started_refuses(country_db: Path, tmp_path: Path) -> None:
    from geofence.integrations import enforce_class

    answers: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        answers.append(enforce_class(scope, "4E091").allowed)  # too late to mark the response private
        await send({"type": "http.response.body", "body": b""})

    middleware = GeofenceMiddleware(app, config=config(country_db, tmp_path / "audit.jsonl"))
    await _raw(middleware, "GET", "/weights", "8.8.8.8")
    middleware.close()
    assert answers == [False]


def test_private_marking_reads_quoted_directives_and_drops_cdn_headers() -> None:
    from geofence.asgi.plumbing import _make_private, private_cache_control

    assert private_cache_control(['public, max-age=600, no-cache="x, private, y"']) == (
        'private, max-age=600, no-cache="x, private, y"'
    )
    assert private_cache_control(["private, max-age=5"]) is None
    assert private_cache_control(["public=1, s-maxage = 9, max-age=5"]) == "private, max-age=5"
    headers = [(b"CDN-Cache-Control", b"max-age=600"), (b"surrogate-control", b"max-age=600"), (b"x", b"1")]
    assert _make_private(headers) == [(b"x", b"1"), (b"cache-control", b"private")]


def test_a_websocket_allowed_by_a_helper_ends_when_its_identity_expires(country_db: Path, tmp_path: Path) -> None:
    import time

    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from geofence import Identity, requires_class

    @requires_class("PERSONS")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):  # geofence ends it: the app is told it disconnected
            while True:
                await websocket.send_text(await websocket.receive_text())

    policy = config(country_db, tmp_path / "audit.jsonl")
    policy["classes"]["PERSONS"] = {"persons": "us_only", "unknown_location": "allow"}
    expires = time.time() + 1.0
    middleware = GeofenceMiddleware(
        Starlette(routes=[WebSocketRoute("/chat", chat)]),
        config=policy,
        identity=lambda scope: Identity(us_person=True, expires=expires),
    )
    with TestClient(middleware, client=("8.8.8.8", 40000)) as client, client.websocket_connect("/chat") as ws:
        ws.send_text("a")
        assert ws.receive_text() == "a"
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        with pytest.raises(WebSocketDisconnect) as ended:
            ws.send_text("b")
            ws.receive_text()
        assert ended.value.code == 1008
    middleware.close()


@pytest.mark.parametrize(
    "header", [b"cdn-cache-control", b"Surrogate-Control", b"cloudflare-cdn-cache-control", b"x-accel-expires"]
)
def test_a_cdn_cache_header_alone_is_dropped_and_the_response_made_private(header: bytes) -> None:
    import asyncio

    from geofence.asgi.plumbing import private_responses

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    start = {"type": "http.response.start", "status": 200, "headers": [(header, b"max-age=86400"), (b"x", b"1")]}
    asyncio.run(private_responses(send)(start))
    assert sent[0]["headers"] == [(b"x", b"1"), (b"cache-control", b"private")]


def test_a_hostile_cache_control_value_is_parsed_in_linear_time() -> None:
    import time

    from geofence.asgi.plumbing import private_cache_control

    hostile = ['"' + '\\"' * 16_000, '"a' * 24_000, 'public, no-cache="x, private']
    started = time.perf_counter()
    results = [private_cache_control([value]) for value in hostile]
    assert time.perf_counter() - started < 0.5  # quadratic parsing took seconds (an event-loop stall)
    assert results[2] == 'private, no-cache="x, private'  # an unclosed quote runs to the end: one directive


def test_require_class_refuses_to_wrap_a_cached_django_view() -> None:
    pytest.importorskip("django")
    from django.views.decorators.cache import cache_page

    from geofence.django import require_class

    from . import e2e  # noqa: F401  (configures Django's settings)
    from .e2e import django_app  # noqa: F401

    def weights(request: Any) -> Any:
        return None

    with pytest.raises(TypeError, match="wraps a cached view"):
        require_class("4E091")(cache_page(60)(weights))
    assert require_class("4E091")(weights).__wrapped__ is weights  # type: ignore[attr-defined]


def test_a_websocket_bound_to_an_identity_later_closes_at_the_next_message_after_expiry() -> None:
    import asyncio
    import time

    from geofence.asgi.plumbing import Deadline, expiring_websocket

    sent: list[Any] = []
    deadline = Deadline()

    async def receive() -> Any:
        deadline.shorten(time.time() - 1)  # a helper bound the session while this receive was waiting
        return {"type": "websocket.receive", "text": "late"}

    async def send(message: Any) -> None:
        sent.append(message)

    guarded_receive, _ = expiring_websocket(receive, send, deadline)
    message = asyncio.run(guarded_receive())
    assert message == {"type": "websocket.disconnect", "code": 1008}
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "identity expired"}]


async def test_a_helper_refused_after_the_response_started_is_recorded_as_refused(
    country_db: Path, tmp_path: Path
) -> None:
    from geofence.integrations import enforce_class

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        enforce_class(scope, "4E091")
        await send({"type": "http.response.body", "body": b""})

    audit = tmp_path / "audit.jsonl"
    middleware = GeofenceMiddleware(app, config=config(country_db, audit))
    await _raw(middleware, "GET", "/weights", "8.8.8.8")
    middleware.close()
    assert [(outcome, cls) for outcome, cls, _ in records(audit)] == [("deny", "4E091")]
