"""GeofenceMiddleware in process: httpx.ASGITransport for HTTP, a raw ASGI harness for the edge cases."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request

from geofence import Decision, Identity
from geofence.asgi.middleware import GeofenceMiddleware
from geofence.asgi.responses import DenialResponse
from geofence.identity.claims import IdentityError

from .conftest import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def policy(country_db: Path, anonymous_db: Path, **extra: Any) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db), str(anonymous_db)]},
        "proxies": {"trusted": ["10.0.0.0/8"]},
        "defaults": {"class": "EAR99"},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"], "persons": "us_only", "anonymizers": "deny"},
            "SHADOW": {"allow_destinations": ["US"], "mode": "report"},
        },
        "routes": [
            {"path": "/weights/**", "class": "4E091"},
            {"path": "/shadow", "class": "SHADOW"},
            {"method": "POST", "path": "/v1/messages", "json_field": "model", "equals": ["mythos-5"], "class": "4E091",
             "max_body_bytes": 1000},
        ],
        "exempt": {"paths": ["/healthz"]},
        "response": {"blocked_by": "https://example.com/export-controls"},
        **extra,
    }  # fmt: skip


class Recorder:
    """The protected app: records what reached it, answers 200 with the decision."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        decision = scope["state"]["geofence"]
        self.calls.append({"path": scope["path"], "body": body, "decision": decision})
        payload = json.dumps({"class": decision.export_class, "reasons": [r.code for r in decision.reasons]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def us_person(scope: dict[str, Any]) -> Identity | None:
    """A test identity resolver: the X-Test-Identity header names who the caller is."""
    for name, value in scope["headers"]:
        if name == b"x-test-identity":
            if value == b"bad":
                raise IdentityError("signature invalid")
            return Identity(us_person=value == b"us", nationalities=("US",) if value == b"us" else ("DE",))
    return None


async def send(app: Any, method: str, path: str, peer: str = "8.8.8.8", **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        return await client.request(method, path, **kw)


@pytest.fixture
def app(country_db: Path, anonymous_db: Path) -> tuple[GeofenceMiddleware, Recorder]:
    recorder = Recorder()
    return GeofenceMiddleware(recorder, config=policy(country_db, anonymous_db), identity=us_person), recorder


async def test_allowed_request_reaches_the_app_with_its_decision(app: Any) -> None:
    middleware, recorder = app
    response = await send(middleware, "GET", "/anything")
    assert response.status_code == 200
    assert response.json() == {"class": "EAR99", "reasons": []}
    decision = recorder.calls[0]["decision"]
    assert isinstance(decision, Decision) and decision.location.country == "US"


async def test_embargoed_caller_gets_451_and_never_reaches_the_app(app: Any) -> None:
    middleware, recorder = app
    response = await send(middleware, "GET", "/anything", peer="5.8.1.1")
    assert response.status_code == 451
    assert recorder.calls == []
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["link"] == '<https://example.com/export-controls>; rel="blocked-by"'
    assert response.headers["cache-control"] == "private, no-store"
    assert "Authorization" in response.headers["vary"] and "X-Forwarded-For" in response.headers["vary"]
    problem = response.json()
    assert problem["status"] == 451 and problem["title"] == "Unavailable For Legal Reasons"
    assert problem["type"].startswith("tag:geofence")
    assert problem["export_class"] == "EAR99"
    assert problem["reasons"] == [{"code": "destination_denied", "detail": "destination RU is denied for class EAR99"}]
    assert len(problem["policy_version"]) == 16
    text = response.text
    assert "mmdb" not in text and "/tmp" not in text  # nothing about the deployment


async def test_html_for_browsers(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "GET", "/x", peer="5.8.1.1", headers={"accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 451
    assert response.headers["content-type"].startswith("text/html")
    assert "Unavailable For Legal Reasons" in response.text and "destination_denied" in response.text


async def test_identity_required_is_401_with_www_authenticate(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "GET", "/weights/a")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="geofence"'
    assert response.json()["reasons"][0]["code"] == "identity_required"
    bad = await send(middleware, "GET", "/weights/a", headers={"x-test-identity": "bad"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json()["reasons"] == [{"code": "identity_invalid", "detail": "signature invalid"}]


async def test_same_us_address_us_person_vs_foreign_national(app: Any) -> None:
    middleware, _ = app
    ok = await send(middleware, "GET", "/weights/a", headers={"x-test-identity": "us"})
    no = await send(middleware, "GET", "/weights/a", headers={"x-test-identity": "de"})
    assert (ok.status_code, no.status_code) == (200, 451)
    assert no.json()["reasons"][0]["code"] == "not_us_person"


async def test_anonymizer_is_denied(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "GET", "/weights/a", peer="8.8.8.200", headers={"x-test-identity": "us"})
    assert response.status_code == 451 and response.json()["reasons"][0]["code"] == "anonymizer"


async def test_forwarded_for_is_read_only_from_trusted_proxies(app: Any) -> None:
    middleware, _recorder = app
    via_proxy = await send(middleware, "GET", "/x", peer="10.1.1.1", headers={"x-forwarded-for": "5.8.1.1"})
    assert via_proxy.status_code == 451  # the proxy says the caller is in Russia
    forged = await send(middleware, "GET", "/x", peer="8.8.8.8", headers={"x-forwarded-for": "5.8.1.1"})
    assert forged.status_code == 200  # a direct caller cannot move itself
    spoof = await send(middleware, "GET", "/x", peer="5.8.1.1", headers={"x-forwarded-for": "8.8.8.8"})
    assert spoof.status_code == 451


async def test_malformed_header_from_trusted_proxy_fails_closed(country_db: Path, anonymous_db: Path) -> None:
    seen: list[Decision] = []
    middleware = GeofenceMiddleware(
        Recorder(), config=policy(country_db, anonymous_db), identity=us_person, on_decision=lambda d, s: seen.append(d)
    )
    headers = {"x-forwarded-for": "8.8.8.8:junk", "x-test-identity": "us"}
    response = await send(middleware, "GET", "/weights/x", peer="10.1.1.1", headers=headers)
    assert response.status_code == 451
    # The caller learns only that its address could not be established; the audit record says why.
    assert response.json()["reasons"][0] == {
        "code": "client_address_invalid",
        "detail": "the client address could not be established through the proxies in front of this service",
    }
    assert "malformed x-forwarded-for" in seen[0].reasons[0].detail


async def test_paths_that_spell_a_controlled_route_differently_are_controlled(app: Any) -> None:
    middleware, recorder = app
    for path in ("/weights/a\n", "/x/../weights/a", "//weights/a", "/healthz/../weights/a"):
        sent = await run_asgi(middleware, http_scope(path), [{"type": "http.request", "body": b""}])
        assert sent[0]["status"] == 401, path
    assert recorder.calls == []


async def test_multiple_host_headers_are_refused(country_db: Path, anonymous_db: Path) -> None:
    config = policy(country_db, anonymous_db)
    config["routes"].insert(0, {"host": "weights.example.com", "path": "/**", "class": "4E091"})
    middleware = GeofenceMiddleware(Recorder(), config=config)
    headers = [(b"host", b"weights.example.com"), (b"host", b"x.test")]
    sent = await run_asgi(middleware, http_scope("/a", headers=headers), [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 503


async def test_allowed_responses_are_private_to_shared_caches(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "GET", "/weights/a", headers={"x-test-identity": "us"})
    assert response.status_code == 200 and response.headers["cache-control"] == "private"


async def test_a_failing_deny_hook_falls_back_to_the_standard_denial(country_db: Path, anonymous_db: Path) -> None:
    def broken(decision: Decision, scope: dict[str, Any]) -> DenialResponse:
        raise KeyError("oops")

    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db), deny_response=broken)
    response = await send(middleware, "GET", "/x", peer="5.8.1.1")
    assert response.status_code == 451 and response.json()["status"] == 451


async def test_body_classification_replays_the_body_unchanged(app: Any) -> None:
    middleware, recorder = app
    body = json.dumps({"model": "haiku", "messages": ["hello"] * 20}).encode()
    response = await send(middleware, "POST", "/v1/messages", content=body)
    assert response.status_code == 200 and response.json()["class"] == "EAR99"
    assert recorder.calls[0]["body"] == body
    controlled = await send(middleware, "POST", "/v1/messages", content=b'{"model": "mythos-5"}')
    assert controlled.status_code == 401 and controlled.json()["export_class"] == "4E091"
    allowed = await send(
        middleware, "POST", "/v1/messages", content=b'{"model": "mythos-5"}', headers={"x-test-identity": "us"}
    )
    assert allowed.status_code == 200 and recorder.calls[-1]["body"] == b'{"model": "mythos-5"}'


async def test_oversized_and_malformed_bodies_fail_closed_but_are_not_lost(app: Any) -> None:
    middleware, recorder = app
    big = json.dumps({"model": "haiku", "pad": "x" * 5000}).encode()
    response = await send(middleware, "POST", "/v1/messages", content=big)
    assert response.status_code == 401 and response.json()["export_class"] == "4E091"
    allowed = await send(middleware, "POST", "/v1/messages", content=big, headers={"x-test-identity": "us"})
    assert allowed.status_code == 200 and recorder.calls[-1]["body"] == big  # every byte reaches the app
    garbage = await send(middleware, "POST", "/v1/messages", content=b"{{{")
    assert garbage.status_code == 401


async def test_report_mode_lets_the_request_through_and_counts_it(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    middleware, _recorder = app
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        response = await send(middleware, "GET", "/shadow", peer="81.2.69.1")
    assert response.status_code == 200
    assert response.json() == {"class": "SHADOW", "reasons": ["destination_not_allowed", "report_only"]}
    assert middleware.stats[("would_deny", "SHADOW", "destination_not_allowed")] == 1
    assert any("would_deny" in r.message for r in caplog.records)


async def test_exempt_path(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "GET", "/healthz", peer="5.8.1.1")
    assert response.status_code == 200 and response.json()["reasons"] == ["exempt"]


async def test_head_denial_has_no_body(app: Any) -> None:
    middleware, _ = app
    response = await send(middleware, "HEAD", "/x", peer="5.8.1.1")
    assert response.status_code == 451 and response.content == b""


async def test_decisions_are_cached_per_network_and_identity(app: Any) -> None:
    middleware, recorder = app
    for last in (1, 2, 3):
        await send(middleware, "GET", "/x", peer=f"8.8.8.{last}")
    decisions = [call["decision"] for call in recorder.calls]
    assert decisions[0] == decisions[1] == decisions[2]
    assert decisions[0].location.network == "8.8.8.0/25"  # the anonymizer database splits the /24


async def test_decisions_are_computed_once_per_answer_not_per_network(
    write_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two networks with the same facts share one decision; each request still carries its own network."""
    same = {"country": {"iso_code": "US"}, "registered_country": {"iso_code": "US"}}
    db = write_db("same.mmdb", "GeoIP2-Country", {"8.8.8.0/24": same, "9.9.9.0/24": same, "5.8.0.0/16": {}})
    import geofence.asgi.deciding as module

    calls: list[str] = []
    real = module.decide

    def counting(*args: Any, **kwargs: Any) -> Decision:
        calls.append(args[2].network if args[2] is not None else "")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "decide", counting)
    recorder = Recorder()
    middleware = GeofenceMiddleware(recorder, config={"geoip": {"databases": [str(db)]}, "classes": {"EAR99": {}}})
    for peer in ("8.8.8.1", "9.9.9.1", "9.9.9.2", "8.8.8.7"):
        assert (await send(middleware, "GET", "/x", peer=peer)).status_code == 200
    assert calls == ["8.8.8.0/24"]
    networks = [call["decision"].location.network for call in recorder.calls]
    assert networks == ["8.8.8.0/24", "9.9.9.0/24", "9.9.9.0/24", "8.8.8.0/24"]
    assert all(call["decision"].location.country == "US" for call in recorder.calls)


async def test_broken_database_at_lookup_is_503_without_details(tmp_path: Path, country_db: Path) -> None:
    from .conftest import MAXMIND_TESTDATA

    if not MAXMIND_TESTDATA.is_dir():
        pytest.skip("MaxMind test data not available")
    broken = MAXMIND_TESTDATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    middleware = GeofenceMiddleware(
        Recorder(), config={"geoip": {"databases": [str(broken)]}, "classes": {"EAR99": {}}}
    )
    response = await send(middleware, "GET", "/x", peer="81.2.69.160")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json()["reasons"] == [{"code": "error", "detail": "the request could not be evaluated"}]
    assert "Broken" not in response.text and "mmdb" not in response.text


async def test_internal_error_fails_closed(app: Any) -> None:
    middleware, recorder = app

    def explode(scope: dict[str, Any]) -> Identity:
        raise RuntimeError("boom /secret/path")

    middleware._decider.resolver = explode
    assert (await send(middleware, "GET", "/x")).status_code == 200  # EAR99 needs no identity: not consulted
    response = await send(middleware, "GET", "/weights/a")
    assert response.status_code == 503 and len(recorder.calls) == 1
    assert "boom" not in response.text and "secret" not in response.text


async def test_custom_denial_response(country_db: Path, anonymous_db: Path) -> None:
    def custom(decision: Decision, scope: dict[str, Any]) -> DenialResponse:
        return DenialResponse(403, ((b"content-type", b"text/plain"),), b"nope " + decision.export_class.encode())

    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db), deny_response=custom)
    response = await send(middleware, "GET", "/x", peer="5.8.1.1")
    assert (response.status_code, response.text) == (403, "nope EAR99")


async def test_on_decision_hook_sees_denials(country_db: Path, anonymous_db: Path) -> None:
    seen: list[Decision] = []
    middleware = GeofenceMiddleware(
        Recorder(), config=policy(country_db, anonymous_db), on_decision=lambda d, s: seen.append(d)
    )
    await send(middleware, "GET", "/x", peer="5.8.1.1")
    await send(middleware, "GET", "/x", peer="8.8.8.8")
    assert [d.status for d in seen] == [451]


# --- raw ASGI: lifespan, WebSocket, chunked bodies ---------------------------------------------------------


async def run_asgi(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send_(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send_)
    return sent


def http_scope(
    path: str, peer: str = "8.8.8.8", method: str = "GET", headers: list[Any] | None = None
) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or [], "client": (peer, 1)}


async def test_lifespan_passes_through(app: Any) -> None:
    middleware, _ = app
    sent = await run_asgi(middleware, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.complete"}]


async def test_chunked_body_is_replayed_in_its_chunks(app: Any) -> None:
    middleware, recorder = app
    chunks = [b'{"model": ', b'"haiku", ', b'"x": 1}']
    incoming = [{"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)]
    sent = await run_asgi(middleware, http_scope("/v1/messages", method="POST"), incoming)
    assert sent[0]["status"] == 200 and recorder.calls[0]["body"] == b"".join(chunks)


async def test_client_disconnect_while_buffering_fails_closed(app: Any) -> None:
    middleware, recorder = app
    incoming = [{"type": "http.request", "body": b'{"model"', "more_body": True}, {"type": "http.disconnect"}]
    sent = await run_asgi(middleware, http_scope("/v1/messages", method="POST"), incoming)
    assert sent[0]["status"] == 401 and recorder.calls == []


def ws_scope(path: str, peer: str, extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "websocket", "path": path, "headers": [], "client": (peer, 1), "extensions": extensions or {}}


async def test_websocket_denied_with_http_response_when_supported(app: Any) -> None:
    middleware, _ = app
    scope = ws_scope("/x", "5.8.1.1", {"websocket.http.response": {}})
    sent = await run_asgi(middleware, scope, [{"type": "websocket.connect"}])
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 451
    assert json.loads(sent[1]["body"])["reasons"][0]["code"] == "destination_denied"


async def test_websocket_denied_with_1008_otherwise(app: Any) -> None:
    middleware, _ = app
    sent = await run_asgi(middleware, ws_scope("/weights/stream", "8.8.8.8"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "policy violation"}]


# --- reload ------------------------------------------------------------------------------------------------


def write_policy(path: Path, country_db: Path, deny: list[str]) -> None:
    path.write_text(f'[geoip]\ndatabases = ["{country_db}"]\n[classes.EAR99]\ndeny_destinations = {json.dumps(deny)}\n')


async def test_policy_reload_swaps_valid_changes_and_keeps_the_old_on_errors(
    tmp_path: Path, country_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "geofence.toml"
    write_policy(path, country_db, ["RU"])
    middleware = GeofenceMiddleware(Recorder(), config=str(path), reload_interval=0.05)
    try:
        first = middleware.policy.version
        for _ in range(3):  # every cache warm, the front cache included (it admits a client's second request)
            assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 200
        state = middleware._state
        assert state is not None and len(state.front) == 1
        write_policy(path, country_db, ["RU", "US"])
        assert wait_until(lambda: middleware.policy.version != first)
        assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 451
        second = middleware.policy.version
        with caplog.at_level(logging.ERROR, logger="geofence"):
            path.write_text('[classes.EAR99]\ndeny_destinations = ["Narnia"]\n')
            assert wait_until(lambda: any("keeping policy" in r.message for r in caplog.records))
        assert middleware.policy.version == second
        assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 451
        # Touching the file without changing what it means keeps the version.
        write_policy(path, country_db, ["RU", "US"])
        time.sleep(0.3)
        assert middleware.policy.version == second
    finally:
        middleware.close()


async def test_database_file_replacement_is_picked_up(tmp_path: Path, write_db: Any) -> None:
    from .conftest import country

    db = write_db("live.mmdb", "GeoIP2-Country", {"8.8.8.0/24": {"country": country("US")}})
    path = tmp_path / "geofence.toml"
    path.write_text(f'[geoip]\ndatabases = ["{db}"]\n[classes.EAR99]\ndeny_destinations = ["CU"]\n')
    middleware = GeofenceMiddleware(Recorder(), config=str(path), reload_interval=0.05)
    try:
        for _ in range(3):  # every cache warm, the front cache included
            assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 200
        new = write_db("next.mmdb", "GeoIP2-Country", {"8.8.8.0/24": {"country": country("CU")}})
        new.replace(db)
        assert wait_until(lambda: middleware._state.locator.lookup("8.8.8.8").country == "CU")
        assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 451
    finally:
        middleware.close()


# --- frameworks -------------------------------------------------------------------------------------------


async def test_fastapi_app_with_per_endpoint_requirement(country_db: Path, anonymous_db: Path) -> None:
    from fastapi import Depends, FastAPI

    from geofence.integrations import install_handler, require_class

    api = FastAPI()
    install_handler(api)

    @api.get("/open")
    async def open_endpoint(request: Request) -> dict[str, Any]:
        return {"class": request.state.geofence.export_class}

    @api.get("/weights-by-code", dependencies=[Depends(require_class("4E091"))])
    async def weights() -> dict[str, str]:
        return {"weights": "..."}

    api.add_middleware(GeofenceMiddleware, config=policy(country_db, anonymous_db), identity=us_person)
    assert (await send(api, "GET", "/open")).json() == {"class": "EAR99"}
    denied = await send(api, "GET", "/weights-by-code")  # no route rule, but the endpoint demands 4E091
    assert denied.status_code == 401 and denied.json()["export_class"] == "4E091"
    allowed = await send(api, "GET", "/weights-by-code", headers={"x-test-identity": "us"})
    assert allowed.status_code == 200
    blocked = await send(api, "GET", "/open", peer="5.8.1.1")
    assert blocked.status_code == 451


async def test_starlette_decorator(country_db: Path, anonymous_db: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from geofence.integrations import requires_class

    @requires_class("4E091")
    async def weights(request: Request) -> JSONResponse:
        return JSONResponse({"class": request.state.geofence.export_class})

    app = Starlette(
        routes=[Route("/weights-by-code", weights)],
        middleware=[Middleware(GeofenceMiddleware, config=policy(country_db, anonymous_db), identity=us_person)],
    )
    assert (await send(app, "GET", "/weights-by-code", peer="81.2.69.1")).status_code == 451
    ok = await send(app, "GET", "/weights-by-code", headers={"x-test-identity": "us"})
    assert ok.status_code == 200 and ok.json() == {"class": "EAR99"}


# --- verified identity from tokens ------------------------------------------------------------------------


async def test_tokens_through_the_middleware(tmp_path: Path, country_db: Path) -> None:
    from .test_tokens import EC_KEY, RSA_KEY, jwk, token, token_policy

    classes = '[classes.EAR99]\n[classes.C]\nallow_destinations = ["US"]\npersons = "us_only"\n'
    path, jwks = token_policy(tmp_path, country_db, classes + '[[routes]]\npath = "/weights/**"\nclass = "C"\n')
    middleware = GeofenceMiddleware(Recorder(), config=str(path), reload_interval=0.05)
    try:
        bearer = {"authorization": f"Bearer {token()}"}
        assert (await send(middleware, "GET", "/weights/a", headers=bearer)).status_code == 200
        german = {"authorization": f"Bearer {token(us_person=False, nationalities=['DEU'])}"}
        no = await send(middleware, "GET", "/weights/a", headers=german)
        assert no.status_code == 451 and no.json()["reasons"][0]["code"] == "not_us_person"
        assert (await send(middleware, "GET", "/weights/a")).status_code == 401
        twice = await send(middleware, "GET", "/weights/a", headers=[("authorization", bearer["authorization"])] * 2)
        assert twice.status_code == 401 and "2 authorization headers" in twice.json()["reasons"][0]["detail"]
        expired = {"authorization": f"Bearer {token(exp=int(time.time()) - 300)}"}
        response = await send(middleware, "GET", "/weights/a", headers=expired)
        assert response.status_code == 401 and response.json()["reasons"][0]["detail"] == "token expired"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        # Signing-key rotation through the key file, without a restart.
        rotated = {"authorization": f"Bearer {token(EC_KEY, 'ES256', 'ec-9')}"}
        assert (await send(middleware, "GET", "/weights/a", headers=rotated)).status_code == 401
        jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-9")]}))
        assert wait_until(
            lambda: (
                middleware._state.verifier is not None
                and middleware._state.verifier._keys.find("ES256", "ec-9") is not None
            )
        )
        assert (await send(middleware, "GET", "/weights/a", headers=rotated)).status_code == 200
    finally:
        middleware.close()


async def test_app_cache_directives_are_kept_but_made_private(country_db: Path, anonymous_db: Path) -> None:
    async def cached_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"cache-control", b"public, max-age=600, s-maxage=3600")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = GeofenceMiddleware(cached_app, config=policy(country_db, anonymous_db))
    response = await send(middleware, "GET", "/anything")
    assert response.headers["cache-control"] == "private, max-age=600"


async def test_private_cache_marking_is_for_get_and_can_be_turned_off(country_db: Path, anonymous_db: Path) -> None:
    middleware, _ = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db)), None
    posted = await send(middleware, "POST", "/anything", content=b"{}")
    assert posted.status_code == 200 and "cache-control" not in posted.headers  # POST is not stored by caches
    off = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db, response={"private_cache": False}))
    response = await send(off, "GET", "/anything")
    assert response.status_code == 200 and "cache-control" not in response.headers
