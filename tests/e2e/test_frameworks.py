"""End to end: the Litestar guard and the Django view decorator (``geofence.litestar`` / ``geofence.django``)
under real servers on 127.0.0.1 (uvicorn and hypercorn in a thread, granian in a subprocess), behind a real
GeofenceMiddleware.

The routes the guard and the decorator protect are *not* tagged by the policy: only the code demands their class.
Each denial is compared, header by header and byte by byte, with the middleware's own denial of a route the
policy does tag with the same class (``/tagged``), from the same client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import mint_token

from .test_servers import (
    SPEC_ENV,
    VARIANT_HEADER,
    Reply,
    Switch,
    demo_identity,
    http_request,
    serve,
    serve_granian,
)

US, RUSSIA = "8.8.8.8", "5.8.1.1"  # in the country_db fixture
SERVERS = ["uvicorn", "hypercorn", "granian"]


@contextlib.contextmanager
def serve_framework(server: str, framework: str, config: dict[str, Any], **options: Any) -> Iterator[int]:
    """Serve the *framework*'s test apps under *config*: uvicorn and hypercorn in this process, granian in its
    own (which imports the apps by name: :func:`granian_app`)."""
    if server == "granian":
        spec = {"framework": framework, "config": config}
        with serve_granian(spec, factory="tests.e2e.test_frameworks:granian_app") as port:
            yield port
        return
    build: Callable[[dict[str, Any]], Switch] = litestar_apps if framework == "litestar" else django_apps
    with serve(server, build(config), **options) as port:
        yield port


def granian_app() -> Switch:
    """granian ``--factory`` target: the apps ``$GEOFENCE_E2E_SPEC`` names."""
    spec = json.loads(os.environ[SPEC_ENV])
    return litestar_apps(spec["config"]) if spec["framework"] == "litestar" else django_apps(spec["config"])


SERVER_ONLY = ("date", "server", "connection", "transfer-encoding")


def policy(country_db: Path, public_key: Path) -> dict[str, Any]:
    """4E091: US only; 5E002: a verified U.S. person. ``/tagged*`` are the policy's own routes for those classes;
    every other path is OPEN, so only the code protects it."""
    return {
        "geoip": {"databases": [str(country_db)]},
        "proxies": {"trusted": ["127.0.0.1/32"]},
        "defaults": {"class": "OPEN"},
        "identity": demo_identity(public_key),
        "classes": {
            "OPEN": {"unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"]},
            "5E002": {"persons": "us_only", "unknown_location": "allow"},
        },
        "routes": [
            {"path": "/tagged", "class": "4E091"},
            {"path": "/tagged-person", "class": "5E002"},
            {"path": "/shop/tagged", "class": "4E091"},
        ],
        "response": {"blocked_by": "https://example.com/export-controls"},
    }


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, Any]:
    """A demo key (its public half is what the policy trusts) and a U.S. person's token."""
    key = tmp_path / "demo-key.pem"
    return {"us": mint_token(["US"], True, key=key, ttl=600), "public_key": key.with_suffix(".pub.pem")}


def get(port: int, path: str, client: str, *, variant: str = "main", **headers: str) -> Reply:
    names = {"accept": "Accept", "authorization": "Authorization"}
    sent = {VARIANT_HEADER: variant, "X-Forwarded-For": client, "X-Request-ID": "e2e-frameworks"}
    sent.update({names.get(k, k): v for k, v in headers.items()})  # the same id: denials name it
    return http_request(port, path, headers=sent)


def assert_same_denial(reply: Reply, reference: Reply) -> None:
    """*reply* is exactly the middleware's own denial *reference*: status, every header, body."""
    assert reply.status == reference.status, (reply, reference)
    ours = {k: v for k, v in reply.headers.items() if k not in SERVER_ONLY}
    theirs = {k: v for k, v in reference.headers.items() if k not in SERVER_ONLY}
    assert ours == theirs
    assert reply.body == reference.body


def check_denials(port: int, protected: list[str], *, tagged: str = "/tagged", variant: str = "main") -> None:
    """Every path in *protected* is allowed for a US client and denied for a Russian one exactly as the
    middleware denies *tagged*, as problem JSON and as HTML."""
    for path in protected:
        ok = get(port, path, US, variant=variant)
        assert ok.status == 200, (path, ok)
        for accept in ("application/json", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"):
            reference = get(port, tagged, RUSSIA, variant=variant, accept=accept)
            assert reference.status == 451
            denied = get(port, path, RUSSIA, variant=variant, accept=accept)
            assert_same_denial(denied, reference)
            assert denied.headers["cache-control"] == "private, no-store"
            assert denied.headers["link"] == '<https://example.com/export-controls>; rel="blocked-by"'
            assert "X-Forwarded-For" in denied.headers["vary"]
            if accept == "application/json":
                assert denied.headers["content-type"] == "application/problem+json"
                assert denied.json()["export_class"] == "4E091"
                assert denied.codes() == ["destination_not_allowed"]
            else:
                assert denied.headers["content-type"] == "text/html; charset=utf-8"
                assert denied.body.startswith(b"<!doctype html>")


def check_identity_and_unknown(port: int, token: str, prefix: str = "", variant: str = "main") -> None:
    """A class that needs a verified identity: 401 without one (as the middleware's own), 200 with one; an
    unknown class: 503."""
    reference = get(port, f"{prefix}/tagged-person", US, variant=variant)
    assert reference.status == 401
    missing = get(port, f"{prefix}/person", US, variant=variant)
    assert_same_denial(missing, reference)
    assert missing.headers["www-authenticate"] == 'Bearer realm="geofence"'
    invalid = get(port, f"{prefix}/person", US, variant=variant, authorization="Bearer not.a.token")
    assert invalid.status == 401 and invalid.codes() == ["identity_invalid"]
    assert invalid.headers["www-authenticate"] == 'Bearer realm="geofence", error="invalid_token"'
    ok = get(port, f"{prefix}/person", RUSSIA, variant=variant, authorization=f"Bearer {token}")
    assert ok.status == 200 and ok.json()["class"] == "OPEN"  # the route's class; the code demanded 5E002
    unknown = get(port, f"{prefix}/unknown", US, variant=variant)
    assert unknown.status == 503 and unknown.headers["retry-after"] == "30"
    assert unknown.headers["cache-control"] == "private, no-store"
    assert unknown.json()["export_class"] == "NO-SUCH-CLASS" and unknown.codes() == ["error"]
    assert b"NO-SUCH-CLASS'" not in unknown.body  # the internal detail is not sent


# --- Litestar -----------------------------------------------------------------------------------------------


def litestar_apps(config: dict[str, Any], reached: list[str] | None = None) -> Switch:
    """Variants: ``main`` (geofence wraps the app; guards on handlers, a router and a WebSocket), ``inner``
    (the same app, geofence as Litestar middleware) and ``app-guard`` (one guard for the whole app)."""
    pytest.importorskip("litestar")
    from litestar import Litestar, Request, Router, WebSocket, get, websocket
    from litestar.middleware import DefineMiddleware

    from geofence.litestar import exception_handlers, require_class

    seen = reached if reached is not None else []

    def endpoint(name: str, *guards: Any) -> Any:
        @get(f"/{name}", guards=list(guards), sync_to_thread=False, name=name)
        def handler(request: Request[Any, Any, Any]) -> dict[str, Any]:
            seen.append(name)
            return {"endpoint": name, "class": request.scope["state"]["geofence"].export_class}  # type: ignore[typeddict-item]

        return handler

    @websocket("/ws", guards=[require_class("4E091")])
    async def ws(socket: WebSocket[Any, Any, Any]) -> None:
        seen.append("ws")
        await socket.accept()
        await socket.send_text("echo " + await socket.receive_text())
        await socket.close()

    def handlers() -> list[Any]:
        team = Router("/team", route_handlers=[endpoint("weights")], guards=[require_class("4E091")])
        return [
            endpoint("weights", require_class("4E091")),
            endpoint("person", require_class("5E002")),
            endpoint("unknown", require_class("NO-SUCH-CLASS")),
            endpoint("tagged"),
            endpoint("tagged-person"),
            team,
            ws,
        ]

    main = Litestar(handlers(), exception_handlers=exception_handlers)
    inner = Litestar(
        handlers(),
        exception_handlers=exception_handlers,
        middleware=[DefineMiddleware(GeofenceMiddleware, config=config)],
    )
    guarded = Litestar(
        [endpoint("all"), endpoint("tagged")], guards=[require_class("4E091")], exception_handlers=exception_handlers
    )
    apps = {"main": GeofenceMiddleware(main, config), "inner": inner, "app-guard": GeofenceMiddleware(guarded, config)}
    return Switch(apps, "main")


@pytest.fixture(params=SERVERS)
def litestar_server(request: Any, country_db: Path, tokens: dict[str, Any]) -> Iterator[tuple[int, list[str] | None]]:
    """The port, and the handlers reached (None under granian: they run in its own process)."""
    config = policy(country_db, tokens["public_key"])
    if request.param == "granian":
        with serve_framework("granian", "litestar", config) as port:
            yield port, None
        return
    reached: list[str] = []
    with serve(request.param, litestar_apps(config, reached)) as port:
        yield port, reached


@pytest.mark.parametrize("variant", ["main", "inner"], ids=["geofence-outside", "litestar-middleware"])
def test_litestar_guard_denies_exactly_like_the_middleware(litestar_server: Any, variant: str) -> None:
    port, reached = litestar_server
    check_denials(port, ["/weights", "/team/weights"], variant=variant)
    assert get(port, "/weights", US, variant=variant).json() == {"endpoint": "weights", "class": "OPEN"}
    if reached is not None:
        reached.clear()
    get(port, "/weights", RUSSIA, variant=variant)
    get(port, "/team/weights", RUSSIA, variant=variant)
    assert not reached  # a denied request never reaches the handler


def test_litestar_guard_on_the_whole_app(litestar_server: Any) -> None:
    port, _ = litestar_server
    check_denials(port, ["/all"], variant="app-guard")


@pytest.mark.parametrize("variant", ["main", "inner"], ids=["geofence-outside", "litestar-middleware"])
def test_litestar_guard_identity_and_unknown_class(litestar_server: Any, tokens: dict[str, Any], variant: str) -> None:
    port, reached = litestar_server
    check_identity_and_unknown(port, tokens["us"], variant=variant)
    assert "unknown" not in (reached or [])


def test_litestar_guard_refuses_a_websocket_before_accepting(litestar_server: Any) -> None:
    websockets = pytest.importorskip("websockets")
    from websockets.exceptions import InvalidStatus

    port, reached = litestar_server

    async def run() -> None:
        url = f"ws://127.0.0.1:{port}/ws"
        async with websockets.connect(url, additional_headers={"X-Forwarded-For": US}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
        if reached is not None:
            reached.clear()
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers={"X-Forwarded-For": RUSSIA}):
                pass
        assert refused.value.response.status_code == 403  # closed (1008) before accept: the server answers 403
        assert not reached

    asyncio.run(run())


# --- Django -------------------------------------------------------------------------------------------------


def django_apps(config: dict[str, Any]) -> Switch:
    """Django's ASGI handler behind geofence (Switch answers lifespan, which Django's handler does not speak);
    variant ``mounted``: the same, mounted at ``/legacy`` in a Starlette app."""
    pytest.importorskip("django")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from . import django_app

    mounted = Starlette(routes=[Mount("/legacy", app=GeofenceMiddleware(django_app.application(), config))])
    return Switch({"main": GeofenceMiddleware(django_app.application(), config), "mounted": mounted}, "main")


@pytest.mark.parametrize("server", SERVERS)
def test_django_decorator_denies_exactly_like_the_middleware(
    server: str, country_db: Path, tokens: dict[str, Any]
) -> None:
    with serve_framework(server, "django", policy(country_db, tokens["public_key"])) as port:
        check_denials(port, ["/weights-sync", "/weights-async"])
        check_denials(port, ["/shop/weights-sync", "/shop/weights-async"], tagged="/shop/tagged")
        assert get(port, "/weights-sync", US).json() == {"view": "sync", "class": "OPEN"}
        assert get(port, "/shop/weights-async", US).json() == {"view": "async", "class": "OPEN"}


@pytest.mark.parametrize("server", SERVERS)
def test_django_decorator_identity_and_unknown_class(server: str, country_db: Path, tokens: dict[str, Any]) -> None:
    config = policy(country_db, tokens["public_key"])
    config["routes"].append({"path": "/shop/tagged-person", "class": "5E002"})
    with serve_framework(server, "django", config) as port:
        check_identity_and_unknown(port, tokens["us"])
        check_identity_and_unknown(port, tokens["us"], prefix="/shop")


def test_django_under_a_url_prefix(country_db: Path, tokens: dict[str, Any]) -> None:
    """Django mounted at ``/legacy`` (a Starlette ``Mount``: ``root_path = "/legacy"``), and served with
    ``uvicorn --root-path /legacy`` (behind a proxy that strips the prefix): the decorator still decides."""
    apps = django_apps(policy(country_db, tokens["public_key"]))
    with serve("uvicorn", apps) as port:
        protected = ["/legacy/weights-sync", "/legacy/weights-async", "/legacy/shop/weights-sync"]
        check_denials(port, protected, tagged="/legacy/tagged", variant="mounted")
        assert get(port, "/legacy/weights-sync", US, variant="mounted").json() == {"view": "sync", "class": "OPEN"}
    with serve("uvicorn", apps, root_path="/legacy") as port:
        check_denials(port, ["/weights-sync", "/weights-async", "/shop/weights-async"])
