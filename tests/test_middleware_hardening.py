"""Hardening of the middleware glue: broken proxy chains, bounded caches under hostile input, log lines an
attacker cannot forge, private marking of exempt responses, refusing to serve a broken policy, and WebSockets
that end with the identity that allowed them."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from geofence import Decision, Identity
from geofence.asgi.middleware import GeofenceMiddleware

from .test_middleware import Recorder, http_scope, policy, run_asgi, send

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def seen_middleware(config: dict[str, Any], seen: list[Decision], **kw: Any) -> GeofenceMiddleware:
    return GeofenceMiddleware(Recorder(), config=config, on_decision=lambda d, s: seen.append(d), **kw)


# --- family 2: a broken proxy chain is its own denial -----------------------------------------------------


@pytest.mark.parametrize("forwarded", ["8.8.8.8:junk", "unknown", "_hidden", "", "8.8.8.8, x, 9.9.9.9 9"])
async def test_broken_chain_from_a_trusted_proxy_is_denied_even_where_unknown_locations_pass(
    country_db: Path, anonymous_db: Path, forwarded: str
) -> None:
    seen: list[Decision] = []
    middleware = seen_middleware(policy(country_db, anonymous_db), seen)
    # EAR99 has unknown_location = "allow": an unknown location would pass, a broken chain must not.
    response = await send(middleware, "GET", "/anything", peer="10.1.1.1", headers={"x-forwarded-for": forwarded})
    assert response.status_code == 451, response.text
    codes = [r["code"] for r in response.json()["reasons"]]
    assert "client_address_invalid" in codes
    # The caller learns nothing about the deployment; the audit record says why.
    assert "x-forwarded-for" not in response.text.lower()
    assert seen and any(r.code == "client_address_invalid" for r in seen[0].reasons)


async def test_missing_header_from_a_trusted_proxy_is_a_broken_chain(country_db: Path, anonymous_db: Path) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    response = await send(middleware, "GET", "/anything", peer="10.1.1.1")
    assert response.status_code == 451
    assert [r["code"] for r in response.json()["reasons"]] == ["client_address_invalid"]


async def test_a_class_that_restricts_nobody_is_not_denied_for_a_broken_chain(
    country_db: Path, anonymous_db: Path
) -> None:
    config = policy(country_db, anonymous_db)
    config["classes"]["OPEN"] = {"unknown_location": "allow"}
    config["routes"].insert(0, {"path": "/open", "class": "OPEN"})
    middleware = GeofenceMiddleware(Recorder(), config=config)
    response = await send(middleware, "GET", "/open", peer="10.1.1.1", headers={"x-forwarded-for": "junk"})
    assert response.status_code == 200


async def test_server_rewrite_without_proxies_configured_fails_closed_and_says_what_to_change(
    country_db: Path, anonymous_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = policy(country_db, anonymous_db)
    del config["proxies"]
    middleware = GeofenceMiddleware(Recorder(), config=config)
    # uvicorn's defaults trust 127.0.0.1 and replace scope["client"] with the X-Forwarded-For entry: the
    # "peer" geofence sees is whatever the client wrote.
    with caplog.at_level(logging.WARNING, logger="geofence"):
        for i in range(40):  # distinct forged addresses cannot use up the warnings either
            peer = f"8.8.8.{i}"
            forged = await send(middleware, "GET", "/anything", peer=peer, headers={"x-forwarded-for": peer})
            assert forged.status_code == 451
            assert "client_address_invalid" in [r["code"] for r in forged.json()["reasons"]]
    warnings = [r for r in caplog.records if "proxy-headers" in r.getMessage() or "forwarded" in r.getMessage()]
    assert len(warnings) == 1  # once, not per request
    # A header that does not name the peer is only client noise: the peer is the client.
    noise = await send(middleware, "GET", "/anything", peer="8.8.8.8", headers={"x-forwarded-for": "5.8.1.1"})
    assert noise.status_code == 200


# --- family 6: bounded by bytes under hostile input ------------------------------------------------------


def retained_bytes(*roots: object) -> int:
    """Bytes reachable from *roots* (the caches), counting each object once: what the caches keep alive."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


async def test_distinct_large_headers_do_not_accumulate_memory(country_db: Path, anonymous_db: Path) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    state = middleware._state
    assert state is not None
    caches = (state.front, state.clients, state.peers, state.policy.routes._memo)
    await send(middleware, "GET", "/warm")
    before = retained_bytes(*caches)
    filler = "9" * (64 * 1024)
    for i in range(1500):
        for peer in ("8.8.8.8", "10.1.1.1"):  # an untrusted peer and a trusted proxy
            headers = [(b"x-forwarded-for", f"8.8.8.{i % 200}, {filler}{i}".encode()), (b"host", filler.encode())]
            scope = http_scope(f"/p/{filler[:4000]}{i}", peer=peer, headers=headers)
            await run_asgi(middleware, scope, [{"type": "http.request", "body": b""}])
    grown = retained_bytes(*caches) - before
    # 3,000 requests carried ~400 MB of client-controlled text; the caches keep none of it.
    assert grown < 1024 * 1024, f"{grown / 1e6:.1f} MB retained after 3,000 hostile requests"
    assert state.front.size_bytes <= state.front.max_bytes and state.clients.size_bytes <= state.clients.max_bytes


async def test_the_hot_set_survives_a_flood_of_one_time_requests(country_db: Path, anonymous_db: Path) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    state = middleware._state
    assert state is not None
    await send(middleware, "GET", "/hot")
    await send(middleware, "GET", "/hot")  # admitted on the client's second request
    hot_key = next(iter(state.front._data))
    for i in range(state.front.max_entries + 100):
        scope = http_scope(f"/cold/{i}")
        await run_asgi(middleware, scope, [{"type": "http.request", "body": b""}])
        if i % 1000 == 0:
            await run_asgi(middleware, http_scope("/hot"), [{"type": "http.request", "body": b""}])
    assert hot_key in state.front  # never cleared wholesale; the entry in use kept its place


async def test_one_off_clients_are_decided_but_not_admitted_to_the_front_cache(
    country_db: Path, anonymous_db: Path
) -> None:
    """The front cache holds built objects and is small: a flood of new clients must not fill it (nor pay for
    it); a client that comes back is admitted, and then answered from it."""
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    state = middleware._state
    assert state is not None
    for i in range(300):
        assert (await send(middleware, "GET", "/v1/models", peer=f"8.8.{i // 250}.{i % 250}")).status_code == 200
    # the Python steps cache each client (bounded); the native path none but the first, whose record was new to it
    assert len(state.front) == 0 and len(state.clients) == (1 if state.resolver is not None else 300)
    await send(middleware, "GET", "/v1/models", peer="8.8.0.7")
    assert len(state.front) == 1
    assert (await send(middleware, "GET", "/v1/models", peer="8.8.0.7")).status_code == 200  # a front-cache hit


async def test_long_methods_count_against_the_byte_budget(country_db: Path, anonymous_db: Path) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    state = middleware._state
    assert state is not None
    for i in range(200):  # h11 accepts any token as a method, up to its header size limit
        scope = http_scope("/v1/models", method=f"X{i:05d}" + "A" * 15_000)
        await run_asgi(middleware, scope, [{"type": "http.request", "body": b""}])
    assert len(state.front) == 0 and retained_bytes(state.front, state.policy.routes._memo) < 256 * 1024


# --- family 7: logs an attacker cannot write into ---------------------------------------------------------


async def test_decision_log_line_escapes_control_characters_and_names_the_resolved_client(
    country_db: Path, anonymous_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    path = "/x\r\ndeny GET /forged client=1.2.3.4\u2028\x1b[31m"
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        sent = await run_asgi(
            middleware,
            http_scope(path, peer="10.1.1.1", headers=[(b"x-forwarded-for", b"5.8.1.1")]),
            [{"type": "http.request", "body": b""}],
        )
    assert sent[0]["status"] == 451
    lines = [r.getMessage() for r in caplog.records if r.name == "geofence.decision"]
    assert len(lines) == 1
    line = lines[0]
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and "\x1b" not in line
    assert '"/x\\x0d\\x0adeny GET /forged client=1.2.3.4\\u2028\\x1b[31m"' in line  # one quoted field
    assert "client=5.8.0.0/16 RU" in line and "10.1.1.1" not in line  # the client, not the proxy


async def test_log_line_escapes_bidi_and_format_characters(
    country_db: Path, anonymous_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        await run_asgi(middleware, http_scope("/a\u202eb\u2066c\u200bd", peer="5.8.1.1"), [{"type": "http.request"}])
    (line,) = [r.getMessage() for r in caplog.records if r.name == "geofence.decision"]
    assert '"/a\\u202eb\\u2066c\\u200bd"' in line and line.isprintable()


# --- family 8: exempt responses on restricted classes are still private -----------------------------------


async def test_exempt_network_response_is_private_for_shared_caches(country_db: Path, anonymous_db: Path) -> None:
    config = policy(country_db, anonymous_db, exempt={"networks": ["8.8.8.0/24"], "paths": ["/healthz"]})
    middleware = GeofenceMiddleware(Recorder(), config=config)
    response = await send(middleware, "GET", "/weights/a")  # 4E091 restricts; the network is exempt
    assert response.status_code == 200
    assert response.json()["reasons"] == ["exempt"]
    assert response.headers["cache-control"] == "private"


async def test_when_every_spelling_is_allowed_the_strictest_class_decides(country_db: Path, anonymous_db: Path) -> None:
    async def public_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"public, max-age=600")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": scope["state"]["geofence"].export_class.encode()})

    config = policy(country_db, anonymous_db)
    config["classes"]["OPEN"] = {"unknown_location": "allow"}
    config["classes"]["USONLY"] = {"allow_destinations": ["US"]}
    config["defaults"] = {"class": "OPEN"}
    config["routes"] = [{"path": "/v1/x/**", "class": "USONLY"}]
    middleware = GeofenceMiddleware(public_app, config=config)
    for path in ("/v1/x/y", "/v1/x/../y"):  # Starlette routes the second as sent, into /v1/x/{rest:path}
        sent = await run_asgi(middleware, http_scope(path), [{"type": "http.request", "body": b""}])
        assert sent[0]["status"] == 200 and sent[1]["body"] == b"USONLY", path
        assert dict(sent[0]["headers"])[b"cache-control"] == b"private, max-age=600", path


@pytest.mark.parametrize("host", [b"user@api.example.com", b"api.example.com/x", b"api.example.com,other", b"a b", b""])
async def test_hosts_frameworks_read_differently_are_refused_when_host_rules_exist(
    country_db: Path, anonymous_db: Path, host: bytes
) -> None:
    config = policy(country_db, anonymous_db)
    config["routes"].insert(0, {"host": "api.example.com", "path": "/v1/secret/**", "class": "4E091"})
    middleware = GeofenceMiddleware(Recorder(), config=config)
    sent = await run_asgi(
        middleware, http_scope("/v1/secret/a", headers=[(b"host", host)]), [{"type": "http.request", "body": b""}]
    )
    assert sent[0]["status"] == 503
    ok = await run_asgi(
        middleware,
        http_scope("/v1/secret/a", headers=[(b"host", b"API.example.com.:8443")]),
        [{"type": "http.request", "body": b""}],
    )
    assert ok[0]["status"] == 401  # the rule's class: a verified identity is needed


async def test_endpoint_requirements_see_a_broken_chain_and_no_path_exemption(
    country_db: Path, anonymous_db: Path
) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from geofence.integrations import requires_class

    @requires_class("EAR99")
    async def export(request: Request) -> JSONResponse:
        return JSONResponse({"class": request.state.geofence.export_class})

    config = policy(country_db, anonymous_db, exempt={"paths": ["/healthz/**"]})
    config["classes"]["OPEN"] = {"unknown_location": "allow"}
    config["defaults"] = {"class": "OPEN"}  # the route's own class restricts nobody
    app = Starlette(
        routes=[Route("/export", export), Route("/healthz/export", export)],
        middleware=[Middleware(GeofenceMiddleware, config=config)],
    )
    ok = await send(app, "GET", "/export", peer="10.1.1.1", headers={"x-forwarded-for": "8.8.8.8"})
    assert ok.status_code == 200
    # A client behind the proxy breaks the chain on purpose: the code's EAR99 demand must not pass it.
    broken = await send(app, "GET", "/export", peer="10.1.1.1", headers={"x-forwarded-for": "8.8.8.8:junk"})
    assert broken.status_code == 451 and broken.json()["reasons"][0]["code"] == "client_address_invalid"
    # An exempt *path* exempts the route's classification, not a class the endpoint demands in code.
    russia = await send(app, "GET", "/healthz/export", peer="5.8.1.1")
    assert russia.status_code == 451 and russia.json()["reasons"][0]["code"] == "destination_denied"


async def test_a_would_be_denial_on_any_spelling_is_recorded(country_db: Path, anonymous_db: Path) -> None:
    seen: list[Decision] = []
    config = policy(country_db, anonymous_db)
    config["routes"] = [{"path": "/v1/x/**", "class": "SHADOW"}]  # report mode, US only
    middleware = seen_middleware(config, seen)
    sent = await run_asgi(middleware, http_scope("/v1/x/../y", peer="81.2.69.1"), [{"type": "http.request"}])
    assert sent[0]["status"] == 200
    assert [d.export_class for d in seen] == ["SHADOW"] and seen[0].would_deny


# --- family 9: an invalid policy at start never serves ---------------------------------------------------


async def test_invalid_policy_fails_lifespan_startup_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[classes.EAR99]\ndeny_destinations = ["XX"]\n[[routes]]\npath = "nope"\nclass = "EAR99"\n')
    middleware = GeofenceMiddleware(Recorder(), config=str(bad), reload=False)
    sent = await run_asgi(middleware, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "\n" not in sent[0]["message"] and "bad.toml" in sent[0]["message"]
    assert "must start with '/'" in sent[0]["message"]


async def test_invalid_policy_without_lifespan_answers_503_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[classes\n")
    middleware = GeofenceMiddleware(Recorder(), config=str(bad), reload=False)
    response = await send(middleware, "GET", "/anything")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text and "bad.toml" not in response.text
    ws = await run_asgi(middleware, {"type": "websocket", "path": "/", "headers": [], "client": ("8.8.8.8", 1)},
                        [{"type": "websocket.connect"}])  # fmt: skip
    assert ws[0]["type"] == "websocket.close"


async def test_a_fixed_policy_file_starts_serving_without_a_restart(tmp_path: Path, country_db: Path) -> None:
    path = tmp_path / "geofence.toml"
    path.write_text("[classes\n")
    middleware = GeofenceMiddleware(Recorder(), config=str(path), reload_interval=0.05)
    try:
        assert (await send(middleware, "GET", "/a")).status_code == 503
        fixed = tmp_path / "geofence.toml.new"  # replaced by rename, as editors and deploy tools do
        fixed.write_text(f'[geoip]\ndatabases = ["{country_db}"]\n[classes.EAR99]\n')
        fixed.replace(path)
        deadline = time.monotonic() + 10
        while middleware.startup_error is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        response = await send(middleware, "GET", "/a")
        assert response.status_code == 200, response.text
    finally:
        middleware.close()


async def test_missing_host_is_refused_when_host_rules_exist(country_db: Path, anonymous_db: Path) -> None:
    config = policy(country_db, anonymous_db)
    config["routes"].insert(0, {"host": "weights.example.com", "path": "/**", "class": "4E091"})
    middleware = GeofenceMiddleware(Recorder(), config=config)
    sent = await run_asgi(middleware, http_scope("/a"), [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 503


# --- family 10: WebSockets end with the identity that allowed them ---------------------------------------


class Echo:
    """A WebSocket app that accepts, then echoes until the client leaves; records how it ended."""

    def __init__(self) -> None:
        self.ended: dict[str, Any] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ended = message
                return
            await send({"type": "websocket.send", "text": message.get("text", "")})


async def test_websocket_is_closed_when_the_identity_expires(country_db: Path, anonymous_db: Path) -> None:
    expires = time.time() + 0.3

    def identity(scope: dict[str, Any]) -> Identity:
        return Identity(us_person=True, nationalities=("US",), expires=expires)

    echo = Echo()
    middleware = GeofenceMiddleware(echo, config=policy(country_db, anonymous_db), identity=identity)
    sent: list[dict[str, Any]] = []
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    await incoming.put({"type": "websocket.receive", "text": "hello"})

    async def send_(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/weights/stream", "headers": [], "client": ("8.8.8.8", 1)}
    started = time.monotonic()
    await asyncio.wait_for(middleware(scope, incoming.get, send_), timeout=5)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[-1]["code"] == 1008 and sent[-1]["reason"] == "identity expired"
    assert echo.ended == {"type": "websocket.disconnect", "code": 1008}
    assert 0.2 < time.monotonic() - started < 2


async def test_websocket_expired_before_accept_sends_nothing(country_db: Path, anonymous_db: Path) -> None:
    def identity(scope: dict[str, Any]) -> Identity:
        return Identity(us_person=True, expires=time.time() - 1)  # already expired: nothing may flow

    class Talker:
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "secret"})

    middleware = GeofenceMiddleware(Talker(), config=policy(country_db, anonymous_db), identity=identity)
    scope = {"type": "websocket", "path": "/weights/stream", "headers": [], "client": ("8.8.8.8", 1)}
    sent = await run_asgi(middleware, scope, [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert json.dumps(sent).find("secret") == -1
