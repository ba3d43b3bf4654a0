"""End to end against real servers on 127.0.0.1 — uvicorn, hypercorn, granian — and real frameworks (Starlette,
Litestar): path spellings, root paths and mounts, Host spellings, and a WebSocket outliving its token.

Every bypass test first shows that the spelling *reaches the endpoint* (geofence absent, or the class allowed),
so a denial means something; then that it is denied when the class is denied for the caller.

Requests whose exact request-target matters are sent with ``http.client`` (httpx normalises ``.`` segments).
This module also holds the server helpers the other e2e modules use: in-thread uvicorn
(:class:`geofence.cli.demo.RunningServer`) and hypercorn, and granian in a subprocess (it can only load an app by
import path: :func:`granian_app` builds it from a JSON spec in the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Self

import pytest

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import DEMO_AUDIENCE, DEMO_ISSUER, RunningServer, demo_app, mint_token

from ..conftest import ROOT

ASGIApp = Any
SPEC_ENV = "GEOFENCE_E2E_SPEC"
VARIANT_HEADER = "x-e2e-variant"

# --- servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, alive: Any = None, timeout: float = 20.0) -> None:
    """Until something accepts on 127.0.0.1:*port* (``alive()`` False or the timeout: RuntimeError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the server on port {port} exited before it listened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class HypercornThread:
    """A real hypercorn server (asyncio worker) on 127.0.0.1 in a background thread."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        from hypercorn.config import Config

        self.app = app
        self.port = free_port()
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.graceful_timeout = 1.0
        self.config.accesslog = None
        self.config.errorlog = None
        for name, value in options.items():
            setattr(self.config, name, value)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="e2e-hypercorn", daemon=True)

    def _run(self) -> None:
        from hypercorn.asyncio import serve

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop = asyncio.Event()
            await serve(self.app, self.config, shutdown_trigger=self.stop.wait)  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __enter__
            self.error = exc

    def __enter__(self) -> Self:
        self.thread.start()
        wait_for_port(self.port, self.thread.is_alive)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serve(server: str, app: ASGIApp, **options: Any) -> Iterator[int]:
    """Serve *app* with ``uvicorn`` or ``hypercorn`` in a thread on 127.0.0.1; yields the port.

    uvicorn *options* are ``uvicorn.Config`` keywords (``proxy_headers``, ``forwarded_allow_ips``,
    ``root_path``; RunningServer defaults ``proxy_headers`` to False); hypercorn's are ``Config`` attributes.
    """
    if server == "uvicorn":
        with RunningServer(app, **options) as running:
            yield running.port
    elif server == "hypercorn":
        pytest.importorskip("hypercorn")
        with HypercornThread(app, **options) as running:
            yield running.port
    else:
        raise ValueError(server)


@contextlib.contextmanager
def serve_granian(
    spec: Mapping[str, Any], *, interface: str = "asgi", factory: str = "tests.e2e.test_servers:granian_app"
) -> Iterator[int]:
    """Serve the app *factory* builds from *spec* (default: ``build_app(spec)``) with granian (a subprocess: a
    Rust server with Python workers)."""
    pytest.importorskip("granian")
    port = free_port()
    env = {**os.environ, SPEC_ENV: json.dumps(spec), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--log-level", "warning", "--no-access-log",
        "--factory", factory,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port, lambda: process.poll() is None)
        except RuntimeError:
            process.kill()
            output = process.communicate(timeout=10)[0].decode(errors="replace")
            raise RuntimeError(f"granian did not start:\n{output[-3000:]}") from None
        yield port
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server subprocess: politely, then firmly; and close its output pipe."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


# --- apps ---------------------------------------------------------------------------------------------------


class Switch:
    """Dispatch each request to one of several apps by the ``x-e2e-variant`` header, so one server (the slow
    part to start) can host a bare app and differently configured geofences side by side. The header is not
    removed: it is just another header to the apps. Lifespan is answered here (the apps need none)."""

    def __init__(self, apps: Mapping[str, ASGIApp], default: str) -> None:
        self.apps = dict(apps)
        self.default = default

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await demo_app(scope, receive, send)  # answers start-up and shut-down
            return
        name = self.default
        for key, value in scope["headers"]:
            if key == VARIANT_HEADER.encode():
                name = value.decode("latin-1")
        await self.apps[name](scope, receive, send)


def _decision_class(scope: Mapping[str, Any]) -> str | None:
    decision = (scope.get("state") or {}).get("geofence")
    return getattr(decision, "export_class", None)


def starlette_app(policy: Mapping[str, Any] | None, *, mount: str | None = None) -> ASGIApp:
    """A Starlette app with GET/POST ``/v1/messages``; geofence added with ``add_middleware`` (as documented).
    With *mount*, that app is mounted at *mount* in an outer app: geofence wraps the inner app."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def messages(request: Any) -> Any:
        return JSONResponse({"endpoint": "messages", "class": _decision_class(request.scope)})

    app = Starlette(routes=[Route("/v1/messages", messages, methods=["GET", "POST"])])
    if policy is not None:
        app.add_middleware(GeofenceMiddleware, config=dict(policy))
    return Starlette(routes=[Mount(mount, app=app)]) if mount else app


def litestar_app(policy: Mapping[str, Any] | None, *, inner: bool = False) -> ASGIApp:
    """A Litestar app with GET ``/v1/messages`` (Litestar serves ``/v1/messages/`` and ``/v1//messages`` too).
    Geofence wraps it from outside (``GeofenceMiddleware(app)``) or, with *inner*, as Litestar middleware."""
    pytest.importorskip("litestar")
    from litestar import Litestar, Request, get
    from litestar.middleware import DefineMiddleware

    @get("/v1/messages", sync_to_thread=False)
    def messages(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"endpoint": "messages", "class": _decision_class(request.scope)}

    if policy is not None and inner:
        return Litestar(
            route_handlers=[messages], middleware=[DefineMiddleware(GeofenceMiddleware, config=dict(policy))]
        )
    app = Litestar(route_handlers=[messages])
    return GeofenceMiddleware(app, config=dict(policy)) if policy is not None else app


async def ws_echo(scope: Any, receive: Any, send: Any) -> None:
    """Accept a WebSocket and echo text until the client (or geofence) ends it. (Served behind Switch, which
    answers lifespan.)"""
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": f"echo {message.get('text')}"})


def build_app(spec: Mapping[str, Any]) -> ASGIApp:
    """An app from a JSON spec (so granian, which imports apps by name, can serve the same apps).

    ``{"app": "demo" | "starlette" | "litestar" | "ws-echo", "policies": {variant: policy or null},
    "default": variant, "mount": "/api", "inner": bool, "wrap": None | "granian-proxies:<trusted>" |
    "hypercorn-proxyfix"}``.
    """
    kind = spec["app"]
    apps: dict[str, ASGIApp] = {}
    for variant, policy in spec["policies"].items():
        if kind == "demo":
            apps[variant] = GeofenceMiddleware(demo_app, config=policy) if policy is not None else demo_app
        elif kind == "starlette":
            apps[variant] = starlette_app(policy, mount=spec.get("mount"))
        elif kind == "litestar":
            apps[variant] = litestar_app(policy, inner=spec.get("inner", False))
        elif kind == "ws-echo":
            apps[variant] = GeofenceMiddleware(ws_echo, config=policy) if policy is not None else ws_echo
        else:
            raise ValueError(kind)
    app: ASGIApp = Switch(apps, spec.get("default") or next(iter(apps)))
    wrap = spec.get("wrap")
    if wrap and wrap.startswith("granian-proxies:"):
        from granian.utils.proxies import wrap_asgi_with_proxy_headers

        app = wrap_asgi_with_proxy_headers(app, wrap.partition(":")[2])
    elif wrap == "hypercorn-proxyfix":
        from hypercorn.middleware import ProxyFixMiddleware

        app = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)
    elif wrap:
        raise ValueError(wrap)
    return app


def granian_app() -> ASGIApp:
    """granian ``--factory`` target: the app described by ``$GEOFENCE_E2E_SPEC``."""
    return build_app(json.loads(os.environ[SPEC_ENV]))


@contextlib.contextmanager
def serve_spec(server: str, spec: Mapping[str, Any], **options: Any) -> Iterator[int]:
    """Serve ``build_app(spec)`` with uvicorn / hypercorn (in a thread) or granian (a subprocess)."""
    if server == "granian":
        with serve_granian(spec) as port:
            yield port
    else:
        with serve(server, build_app(spec), **options) as port:
            yield port


# --- requests -----------------------------------------------------------------------------------------------


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def reached(self) -> bool:
        """Did the request reach the ``/v1/messages`` endpoint?"""
        if self.status != 200:
            return False
        try:
            return bool(self.json().get("endpoint") == "messages")
        except ValueError:
            return False

    def codes(self) -> list[str]:
        try:
            return [r["code"] for r in self.json().get("reasons", [])]
        except (ValueError, AttributeError):
            return []


def http_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | list[tuple[str, str]] = (),  # type: ignore[assignment]
    source: str | None = None,
    body: bytes | None = None,
) -> Reply:
    """One real HTTP/1.1 request to 127.0.0.1:*port*, request-target sent exactly as given."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    try:
        connection.putrequest(method, target, skip_host=any(k.lower() == "host" for k, _ in items),
                              skip_accept_encoding=True)  # fmt: skip
        for name, value in items:
            connection.putheader(name, value)
        connection.putheader("Connection", "close")
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


# --- 1. paths -----------------------------------------------------------------------------------------------


def path_policy(country_db: Path, *, denied: bool, host: str | None = None) -> dict[str, Any]:
    """``/v1/messages`` is class 4E091: US only (so denied for a caller on loopback), or open to everyone."""
    rule: dict[str, Any] = {"path": "/v1/messages", "class": "4E091"}
    if host is not None:
        rule["host"] = host
    return {
        "geoip": {"databases": [str(country_db)]},
        "defaults": {"class": "OPEN"},
        "classes": {
            "OPEN": {"unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"]} if denied else {"unknown_location": "allow"},
        },
        "routes": [rule],
    }


def variants(country_db: Path, **rule: Any) -> dict[str, Any]:
    return {
        "bare": None,
        "allowed": path_policy(country_db, denied=False, **rule),
        "denied": path_policy(country_db, denied=True, **rule),
    }


# Spellings of /v1/messages. Which ones a framework serves is what matters; each is checked for that.
SPELLINGS = [
    "/v1/messages",
    "/v1/messages/",
    "/v1//messages",
    "//v1/messages",
    "/v1%2Fmessages",
    "/v1%2fmessages",
    "/v1/messages%2F",
    "/v1/./messages",
    "/v1/x/../messages",
    "/v1/messages/.",
    "/v1/messages//",
    "/v1/mess%61ges",
    "/./v1/messages",
]


def check_spellings(port: int, targets: list[str]) -> dict[str, str]:
    """For each target: 'not served' if the bare app does not route it to the endpoint; otherwise it must be
    served with the class allowed and denied (451/401, never the endpoint) with the class denied."""
    outcome: dict[str, str] = {}
    failures = []
    for target in targets:
        bare = http_request(port, target, headers={VARIANT_HEADER: "bare"})
        if not bare.reached():
            outcome[target] = f"not served ({bare.status})"
            denied = http_request(port, target, headers={VARIANT_HEADER: "denied"})
            if denied.reached():
                failures.append(f"{target}: the bare app does not serve it but the denied variant did?")
            continue
        allowed = http_request(port, target, headers={VARIANT_HEADER: "allowed"})
        denied = http_request(port, target, headers={VARIANT_HEADER: "denied"})
        outcome[target] = f"served; allowed -> {allowed.status} class {_class_of(allowed)}; denied -> {denied.status}"
        if not allowed.reached():
            failures.append(f"{target}: served bare, but not with the class allowed ({allowed.status})")
        if denied.reached() or denied.status not in (401, 451):
            failures.append(f"{target}: BYPASS — served with the class denied ({denied.status} {denied.body[:200]!r})")
    assert not failures, "\n".join(failures) + "\n\nall: " + json.dumps(outcome, indent=1)
    return outcome


def _class_of(reply: Reply) -> Any:
    try:
        return reply.json().get("class")
    except ValueError:
        return None


def served(outcome: Mapping[str, str]) -> set[str]:
    return {target for target, text in outcome.items() if text.startswith("served")}


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_starlette_spellings(server: str, country_db: Path) -> None:
    spec = {"app": "starlette", "policies": variants(country_db)}
    with serve_spec(server, spec) as port:
        outcome = check_spellings(port, SPELLINGS)
    # The test means something: these spellings do reach the endpoint (servers unquote %2F into the path).
    assert {"/v1/messages", "/v1%2Fmessages", "/v1%2fmessages", "/v1/mess%61ges"} <= served(outcome), outcome


@pytest.mark.parametrize("inner", [False, True], ids=["geofence-outside", "litestar-middleware"])
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_litestar_spellings(server: str, inner: bool, country_db: Path) -> None:
    pytest.importorskip("litestar")
    spec = {"app": "litestar", "inner": inner, "policies": variants(country_db)}
    with serve_spec(server, spec) as port:
        outcome = check_spellings(port, SPELLINGS)
    # Litestar serves trailing-slash and repeated-slash spellings of the route.
    assert {"/v1/messages/", "/v1//messages", "//v1/messages", "/v1/messages%2F"} <= served(outcome), outcome


@pytest.mark.parametrize(
    ("server", "options", "targets"),
    [
        ("uvicorn", {"root_path": "/api"}, SPELLINGS + ["/api" + s for s in SPELLINGS[:5]]),
        ("hypercorn", {"root_path": "/api"}, SPELLINGS[:5] + ["/api" + s for s in SPELLINGS] + ["/api%2Fv1/messages"]),
    ],
    ids=["uvicorn --root-path /api", "hypercorn --root-path /api"],
)
def test_root_path(server: str, options: dict[str, Any], targets: list[str], country_db: Path) -> None:
    """uvicorn puts the root path in front of ``path`` (``/v1/messages`` arrives as ``/api/v1/messages`` with
    ``root_path = "/api"``); hypercorn passes the path as sent and Starlette strips the root path if present.
    Either way the app routes it to ``/v1/messages``, and the rule for ``/v1/messages`` must apply."""
    spec = {"app": "starlette", "policies": variants(country_db)}
    with serve_spec(server, spec, **options) as port:
        outcome = check_spellings(port, targets)
    expected = {"/v1/messages"} if server == "uvicorn" else {"/api/v1/messages", "/v1/messages", "/api%2Fv1/messages"}
    assert expected <= served(outcome), outcome


def test_litestar_under_hypercorn_root_path_routes_after_the_roots_first_occurrence(country_db: Path) -> None:
    """hypercorn leaves ``--root-path`` out of ``path``, and Litestar routes whatever follows the root path's
    first occurrence *anywhere* in it: ``/x/api/v1/messages`` reaches ``/v1/messages``."""
    pytest.importorskip("litestar")
    spec = {"app": "litestar", "policies": variants(country_db)}
    targets = ["/v1/messages", "/api/v1/messages", "/x/api/v1/messages", "/x/api/v1/messages/", "/apiv1/messages"]
    with serve_spec("hypercorn", spec, root_path="/api") as port:
        outcome = check_spellings(port, targets)
    assert {"/x/api/v1/messages", "/x/api/v1/messages/"} <= served(outcome), outcome


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_mount(server: str, country_db: Path) -> None:
    """``Mount("/api", app=inner)``, geofence added to ``inner``: it sees ``path = "/api/v1/messages"`` and
    ``root_path = "/api"``, and the rule for ``/v1/messages`` must apply."""
    spec = {"app": "starlette", "mount": "/api", "policies": variants(country_db)}
    targets = ["/api" + s for s in SPELLINGS] + ["/api%2Fv1/messages", "//api/v1/messages", "/api/./v1/messages"]
    with serve_spec(server, spec) as port:
        outcome = check_spellings(port, targets)
    assert {"/api/v1/messages", "/api%2Fv1/messages", "/api/v1%2Fmessages"} <= served(outcome), outcome


HOSTS = [
    "api.example.com",
    "API.Example.COM",
    "API.Example.COM.",
    "api.example.com.:8443",
    "api.example.com:443",
    "API.EXAMPLE.COM.:80",
]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_host_spellings(server: str, country_db: Path) -> None:
    """A rule with ``host = "api.example.com"``: hosts are case-insensitive, and a trailing dot (the absolute
    FQDN, which DNS and the app both accept) or a port must not take a request out of the rule."""
    spec = {"app": "starlette", "policies": variants(country_db, host="api.example.com")}
    failures = []
    with serve_spec(server, spec) as port:
        for host in HOSTS:
            bare = http_request(port, "/v1/messages", headers={"Host": host, VARIANT_HEADER: "bare"})
            assert bare.reached(), f"Host {host!r} does not reach the endpoint: {bare.status}"
            allowed = http_request(port, "/v1/messages", headers={"Host": host, VARIANT_HEADER: "allowed"})
            assert allowed.reached(), f"Host {host!r} with the class allowed: {allowed.status}"
            denied = http_request(port, "/v1/messages", headers={"Host": host, VARIANT_HEADER: "denied"})
            if denied.reached() or denied.status != 451:
                failures.append(f"Host {host!r}: BYPASS — {denied.status}, class {_class_of(denied)}")
        other = http_request(port, "/v1/messages", headers={"Host": "www.example.com", VARIANT_HEADER: "denied"})
        assert other.reached(), "the rule is host-specific: another host gets the default class"
    assert not failures, "\n".join(failures)


# --- 4. a WebSocket cannot outlive the identity that allowed it ---------------------------------------------


def demo_identity(public_key: Path, **settings: Any) -> dict[str, Any]:
    """``[identity]`` trusting the demo token issuer's key at *public_key* (``geofence token`` mints for it)."""
    return {
        "issuer": DEMO_ISSUER,
        "audience": [DEMO_AUDIENCE],
        "algorithms": ["ES256"],
        "public_key_file": str(public_key),
        **settings,
    }


def identity_policy(country_db: Path, public_key: Path) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "defaults": {"class": "OPEN"},
        "identity": demo_identity(public_key, leeway_seconds=0),
        "classes": {
            "OPEN": {"unknown_location": "allow"},
            "4E091": {"persons": "us_only", "unknown_location": "allow"},
        },
        "routes": [{"method": "WEBSOCKET", "path": "/ws/**", "class": "4E091"}],
    }


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_websocket_closed_when_token_expires(server: str, country_db: Path, tmp_path: Path) -> None:
    websockets = pytest.importorskip("websockets")
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    key = tmp_path / "demo-key.pem"
    short = mint_token(["US"], True, key=key, ttl=3, subject="short")  # exp = whole seconds: 2-3 s from now
    long = mint_token(["US"], True, key=key, ttl=600, subject="long")
    expires = json.loads(_b64(short.split(".")[1]))["exp"]
    spec = {"app": "ws-echo", "policies": {"geofence": identity_policy(country_db, key.with_suffix(".pub.pem"))}}

    async def run(port: int) -> None:
        url = f"ws://127.0.0.1:{port}/ws/stream"
        with pytest.raises(InvalidStatus) as no_token:  # the class needs identity: refused at the handshake
            async with websockets.connect(url):
                pass
        assert no_token.value.response.status_code in (401, 403)
        async with (
            websockets.connect(url, additional_headers={"Authorization": f"Bearer {short}"}) as ws,
            websockets.connect(url, additional_headers={"Authorization": f"Bearer {long}"}) as other,
        ):
            await ws.send("hello")
            assert await ws.recv() == "echo hello"  # allowed while the token is valid
            closed = None
            while time.time() < expires + 5:
                try:
                    await ws.send("ping")
                    await asyncio.wait_for(ws.recv(), 0.25)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    closed = time.time()
                    break
                await asyncio.sleep(0.1)
            assert closed is not None, "the WebSocket stayed open > 5 s after its token expired"
            assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
            assert expires - 0.5 <= closed <= expires + 2.5, f"closed {closed - expires:+.2f} s from expiry"
            await other.send("still there?")  # a connection whose token is valid is unaffected
            assert await other.recv() == "echo still there?"

    with serve_spec(server, spec) as port:
        asyncio.run(run(port))


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
