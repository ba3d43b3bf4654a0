"""``geofence demo``: a catch-all app behind the middleware, served by uvicorn, and a scripted tour of it.

The demo trusts 127.0.0.1 and ::1 as proxies, so ``X-Forwarded-For`` can simulate callers from anywhere;
a caller on another loopback address (127.0.0.2) is *not* trusted, which shows a forged header being ignored.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TextIO

from ..asgi.middleware import STATE_KEY, GeofenceMiddleware, Message, Receive, Scope, Send
from ..errors import GeofenceError
from ..policy.load import EXAMPLE_POLICY, Policy, parse_policy
from ..resources import data_path

__all__ = ["demo_app", "demo_policy", "serve", "tour"]

DEMO_PROXIES = ["127.0.0.1/32", "::1/128"]
BLOCKED_BY = "https://geofence.example/export-controls"
DEMO_ISSUER = "https://idp.geofence-demo.invalid"
DEMO_AUDIENCE = "geofence-demo"


def demo_key_path() -> Path:
    """Where the demo signing key lives: a per-user cache file, created on first use (never in the repo)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geofence" / "demo-signing-key.pem"


def ensure_demo_key(path: Path | None = None) -> tuple[Path, Path]:
    """The demo EC P-256 key pair (private, public PEM paths), generated if missing. Demo only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = path or demo_key_path()
    public = private.with_suffix(".pub.pem")
    if not private.exists():
        if path is not None and not private.parent.is_dir():  # a path the user gave: never a silent mkdir -p
            raise GeofenceError(f"{private.parent}: no such directory (create it, or leave out --key)")
        private.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    loaded = _signing_key(private)
    if not public.exists() or public.stat().st_mtime < private.stat().st_mtime:
        public.write_bytes(
            loaded.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, public


def _signing_key(path: Path) -> Any:
    """The EC P-256 private key in *path*, or a one-line :class:`GeofenceError` saying what is wrong with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise GeofenceError(f"{path}: cannot read the key: {exc.strerror or exc}") from None
    except (ValueError, TypeError):  # not PEM, or encrypted
        raise GeofenceError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise GeofenceError(f"{path}: the demo signs ES256 and needs an EC P-256 key")
    return key


def mint_token(
    nationalities: list[str], us_person: bool, key: Path | None = None, ttl: int = 3600, subject: str = "demo-user"
) -> str:
    """A demo identity token (ES256) with OIDC4IDA verified claims, signed by the demo key."""
    import jwt

    private, _ = ensure_demo_key(key)
    now = int(time.time())
    claims = {
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + ttl,
        "verified_claims": {
            "verification": {
                "trust_framework": "geofence_demo",
                "assurance_level": "ial2",
                "time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            },
            "claims": {"nationalities": nationalities, "us_person": us_person},
        },
    }
    return str(jwt.encode(claims, private.read_bytes(), algorithm="ES256", headers={"kid": "geofence-demo"}))


async def demo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every method and path with 200 and the decision that let the request through."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    decision = (scope.get("state") or {}).get(STATE_KEY)
    payload = {
        "message": "served by the demo app",
        "path": scope.get("path"),
        "decision": decision.as_dict() if decision is not None else None,
    }
    body = json.dumps(payload).encode()
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close", "code": 1000})
        return
    more = True
    while more:  # drain the request body: it may be a replay of what the middleware buffered
        chunk: Message = await receive()
        more = chunk.get("more_body", False) and chunk["type"] == "http.request"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def demo_policy(config: str | None) -> Policy | str:
    """The policy file given, or the bundled example trusting loopback as a proxy."""
    if config is not None:
        return config
    with open(data_path(EXAMPLE_POLICY), "rb") as f:
        data = tomllib.load(f)
    data["proxies"] = {"trusted": DEMO_PROXIES, "header": "x-forwarded-for"}
    data["response"] = {"blocked_by": BLOCKED_BY}
    _, public = ensure_demo_key()
    data["identity"] = {
        "issuer": DEMO_ISSUER,
        "audience": [DEMO_AUDIENCE],
        "algorithms": ["ES256"],
        "public_key_file": str(public),
    }
    return parse_policy(data, source=f"{EXAMPLE_POLICY} (demo: trusts {', '.join(DEMO_PROXIES)})")


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise GeofenceError("the demo needs uvicorn: pip install 'geofence[demo]'") from None
    return uvicorn


def build(config: str | None, identity: Any = None) -> GeofenceMiddleware:
    return GeofenceMiddleware(demo_app, config=demo_policy(config), identity=identity)


def serve(config: str | None, host: str, port: int, out: TextIO = sys.stdout) -> None:
    """Serve the demo until interrupted."""
    uvicorn = _uvicorn()
    app = build(config)
    try:  # say it now, in one line, rather than after "serving on" in uvicorn's words
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise GeofenceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"geofence demo: policy {app.policy.source}, version {app.policy.version}", file=out)
    print(f"serving on http://{host}:{port} (Ctrl-C to stop); try:", file=out)
    for line in _curl_examples(host, port):
        print(f"  {line}", file=out)
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level="warning")


def _command() -> str:
    """How to run ``geofence`` from here: bare if it is on PATH, else the path of this environment's script."""
    import shutil

    script = Path(sys.executable).parent / "geofence"
    on_path = shutil.which("geofence")
    return "geofence" if on_path and Path(on_path).resolve() == script.resolve() else str(script)


def _curl_examples(host: str, port: int) -> list[str]:
    base = f"http://{host}:{port}"
    body = '-d \'{"model": "mythos-5"}\''
    token = f'-H "Authorization: Bearer $({_command()} token'
    return [
        f"curl -s {base}/v1/models -H 'X-Forwarded-For: 8.8.8.8'",
        f"curl -s {base}/v1/models -H 'X-Forwarded-For: 5.255.255.5'",
        f"curl -s {base}/v1/messages -H 'X-Forwarded-For: 8.8.8.8' {body}",
        f"curl -s {base}/v1/messages -H 'X-Forwarded-For: 8.8.8.8' {body} \\",
        f'     {token} --nationality US --us-person)"',
        f"curl -s {base}/v1/messages -H 'X-Forwarded-For: 8.8.8.8' {body} \\",
        f'     {token} --nationality DE)"',
    ]


@dataclass
class Step:
    title: str
    method: str
    path: str
    forwarded_for: str | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    source: str | None = None  # bind the client to this loopback address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A real uvicorn server on 127.0.0.1 in a background thread (used by the tour and the tests)."""

    def __init__(self, app: Any, port: int | None = None, **options: Any) -> None:
        uvicorn = _uvicorn()
        self.port = port or _free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            **{"proxy_headers": False, **options},
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="geofence-demo-server", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise GeofenceError(f"the demo server did not start on 127.0.0.1:{self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def request(port: int, step: Step) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request on loopback."""
    source = (step.source, 0) if step.source else None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=source)
    headers = dict(step.headers or {})
    if step.forwarded_for:
        headers["X-Forwarded-For"] = step.forwarded_for
    body = json.dumps(step.body).encode() if step.body is not None else None
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(step.method, step.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def default_steps() -> list[Step]:
    mythos, german = {"model": "mythos-5"}, "2a00:1450:4001:81b::200e"
    controlled = "/v1/models/mythos-5/info"
    us = {"Authorization": f"Bearer {mint_token(['US'], True, subject='demo-us-person')}"}
    de = {"Authorization": f"Bearer {mint_token(['DE'], False, subject='demo-german')}"}
    return [
        Step("ordinary model, caller in the US", "GET", "/v1/models", "8.8.8.8"),
        Step("ordinary model, caller in Russia (embargoed)", "GET", "/v1/models", "5.255.255.5"),
        Step("ordinary model, caller in Germany", "POST", "/v1/messages", german, {"model": "haiku"}),
        Step("controlled model, caller in the US, no identity", "POST", "/v1/messages", "8.8.8.8", mythos),
        Step("controlled model, caller in the US, verified U.S. person", "POST", "/v1/messages", "8.8.8.8", mythos,
             us),
        Step("controlled model, same US address, verified German national", "POST", "/v1/messages", "8.8.8.8",
             mythos, de),
        Step("controlled model, verified U.S. person in Germany", "POST", "/v1/messages", german, mythos, us),
        Step("controlled model, a tampered token", "POST", "/v1/messages", "8.8.8.8", mythos,
             {"Authorization": us["Authorization"][:-4] + "AAAA"}),
        Step("controlled model by path, caller in Australia", "GET", "/v1/models/fable-5/info", "1.1.1.1"),
        Step("controlled model, caller behind a private address", "GET", controlled, "10.1.2.3"),
        Step("controlled model, malformed X-Forwarded-For from the proxy", "GET", controlled, "8.8.8.8:junk"),
        Step("controlled model, untrusted peer 127.0.0.2 forging X-Forwarded-For: 8.8.8.8", "GET", controlled,
             "8.8.8.8", source="127.0.0.2"),
        Step("health check (exempt), caller in Russia", "GET", "/healthz", "5.255.255.5"),
    ]  # fmt: skip


def _token_summary(step: Step) -> str:
    import jwt

    token = (step.headers or {}).get("Authorization", "").removeprefix("Bearer ")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        return "malformed"
    verified = claims.get("verified_claims", {}).get("claims", {})
    return f"us_person={verified.get('us_person')}, nationalities={','.join(verified.get('nationalities', []))}"


def tour(config: str | None = None, out: TextIO = sys.stdout, steps: list[Step] | None = None) -> int:
    """Start the demo server, show a series of real requests against it, stop. Returns 0 if all answered."""
    app = build(config)
    print(f"policy: {app.policy.source}", file=out)
    print(f"policy version {app.policy.version}\n", file=out)
    failures = 0
    with RunningServer(app) as server:
        print(f"demo server on http://127.0.0.1:{server.port} (uvicorn, real HTTP on loopback)\n", file=out)
        for n, step in enumerate(steps or default_steps(), 1):
            try:
                status, _headers, body = request(server.port, step)
            except OSError as exc:
                print(f"{n:>2}. {step.title}: request failed: {exc}", file=out)
                failures += 1
                continue
            data = json.loads(body) if body.startswith(b"{") else {}
            decision = data.get("decision") or data
            reasons = ", ".join(r["code"] for r in decision.get("reasons", [])) or "-"
            print(f"{n:>2}. {step.title}", file=out)
            via = f"  X-Forwarded-For: {step.forwarded_for}" if step.forwarded_for else ""
            body_text = f"  {json.dumps(step.body)}" if step.body else ""
            who = "  (token: " + _token_summary(step) + ")" if step.headers else ""
            print(f"    {step.method} {step.path}{body_text}{via}{who}", file=out)
            print(f"    -> {status}  class {decision.get('export_class', '?')}  reasons: {reasons}\n", file=out)
    print(f"Keep it serving with `{_command()} demo` (http://127.0.0.1:8000) and try, for example:", file=out)
    for line in _curl_examples("127.0.0.1", 8000):
        print(f"  {line}", file=out)
    return 1 if failures else 0
