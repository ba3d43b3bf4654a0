"""The apps and policies the benchmarks measure: hello-worlds, reference middlewares, geofence set-ups.

``python -m uvicorn benchmarks.apps:bare`` / ``benchmarks.apps:protected`` (run from the repository root)
serve the bare Starlette hello-world and the same app behind geofence with the example policy, trusting
127.0.0.1 as a proxy so the load generator can send X-Forwarded-For.

Reference middlewares, to say what geofence's cost is made of:
  * :class:`Noop`: the cheapest pure-ASGI middleware (one extra ``await``), the floor for any middleware;
  * :class:`DataFloor`: finds the client (X-Forwarded-For, else the peer) and does one ``reader.get(ip)``
    per request: the least any GeoIP middleware must do, with no policy, no cache and no decision.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from typing import Any

import maxminddb
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks.common import ROOT
from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import DEMO_AUDIENCE, DEMO_ISSUER, ensure_demo_key, mint_token
from geofence.geoip.databases import default_database_path

EXAMPLE_POLICY = ROOT / "data" / "example-policy.toml"
TRUSTED = ["127.0.0.1/32", "::1/128"]
RULE_CLASS = "3E001"  # the class the generated route rules name: restricting, no person rule


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def make_bare() -> Starlette:
    """Starlette hello-world: every path, GET and POST."""
    return Starlette(routes=[Route("/{path:path}", hello, methods=["GET", "POST"])])


def make_fastapi() -> Any:
    """FastAPI hello-world: every path (a typed path parameter, as FastAPI apps have)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def hello_fastapi(path: str) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return app


FRAMEWORKS = {"starlette": make_bare, "fastapi": make_fastapi}


class Noop:
    """The cheapest possible pure-ASGI middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class DataFloor:
    """One ``maxminddb`` lookup of the client per request, nothing else (the result goes into the scope)."""

    def __init__(self, app: Any, database: str | None = None, header: bytes = b"x-forwarded-for") -> None:
        self.app = app
        self.reader = maxminddb.open_database(database or str(default_database_path()), maxminddb.MODE_MMAP_EXT)
        self.header = header

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            ip = None
            for name, value in scope["headers"]:
                if name == self.header:
                    ip = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                    break
            if ip is None and scope.get("client"):
                ip = scope["client"][0]
            scope.setdefault("state", {})["geoip"] = self.reader.get(ip) if ip else None
        await self.app(scope, receive, send)


# --- policies (dicts in the policy file's shape: only geofence's public API) ---------------------------------


def demo_identity() -> dict[str, Any]:
    """The demo's ``[identity]``: its issuer, audience and EC key (generated on first use, as the demo does)."""
    _, public = ensure_demo_key()
    return {"issuer": DEMO_ISSUER, "audience": [DEMO_AUDIENCE], "algorithms": ["ES256"], "public_key_file": str(public)}


def example_policy(
    *,
    databases: Sequence[str] | None = None,
    routes: list[dict[str, Any]] | None = None,
    private_cache: bool = True,
    audit: str | None = None,
) -> dict[str, Any]:
    """The bundled example policy as the demo runs it: loopback trusted as a proxy, the demo's identity keys.

    Its class ``4E091`` has a person rule (``persons = "us_only"``), so requests on its routes need a token.
    *routes* replaces the example's routes (with the extra class :data:`RULE_CLASS` defined for them); *audit*
    is a file for the audit trail.
    """
    with open(EXAMPLE_POLICY, "rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    data["proxies"] = {"trusted": TRUSTED, "header": "x-forwarded-for"}
    data["identity"] = demo_identity()
    data["response"] = {"private_cache": private_cache}
    if audit is not None:  # every allowed request on a restricting class is recorded, as are denials
        data["audit"] = {"path": audit, "include": "controlled"}
    if databases is not None:
        data["geoip"] = {"databases": list(databases)}
    if routes is not None:
        data["classes"][RULE_CLASS] = {
            "description": "Controlled by route (benchmark): refused in embargoed and unknown locations.",
            "deny_destinations": ["embargoed"],
            "unknown_location": "deny",
        }
        data["routes"] = routes
    return data


def audit_file() -> str:
    """A fresh audit-trail path in a temporary folder removed at exit."""
    folder = tempfile.mkdtemp(prefix="geofence-bench-audit-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return os.path.join(folder, "audit.jsonl")


def rule_routes(n: int) -> list[dict[str, Any]]:
    """*n* route rules of two realistic shapes, alternating: model paths and per-team export paths."""
    return [
        {"path": f"/v1/models/model-{i:04d}/**" if i % 2 == 0 else f"/api/team-{i}/*/export/**", "class": RULE_CLASS}
        for i in range(n)
    ]


def protect(app: Any, policy: dict[str, Any] | None = None) -> GeofenceMiddleware:
    return GeofenceMiddleware(app, config=policy if policy is not None else example_policy())


# --- identity tokens ---------------------------------------------------------------------------------------

IDENTITY_PATH = "/v1/models/mythos-5/info"  # class 4E091 in the example policy: verified U.S. persons only


def us_person_tokens(prefix: str = "bench") -> Iterator[str]:
    """Endless distinct valid demo tokens of verified U.S. persons (allowed from a US address)."""
    i = 0
    while True:
        yield mint_token(["US"], True, subject=f"{prefix}-{i}")
        i += 1


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


def __getattr__(name: str) -> Any:  # the uvicorn targets, built on first use
    if name == "bare":
        return make_bare()
    if name == "protected":
        return protect(make_bare())
    raise AttributeError(name)
