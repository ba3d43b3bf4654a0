"""The Litestar guard and the Django view decorator in process: every way they can be miswired fails closed.
(How they allow and deny behind the middleware, under real servers: tests/e2e/test_frameworks.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.integrations import denial_parts

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(country_db: Path) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "defaults": {"class": "OPEN"},
        "classes": {"OPEN": {"unknown_location": "allow"}, "4E091": {"allow_destinations": ["US"]}},
    }


async def get(app: Any, path: str, peer: str = "8.8.8.8") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path)


def test_importing_geofence_loads_neither_framework() -> None:
    script = "import sys, geofence\nprint(sorted(m for m in ('litestar', 'django') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_denial_parts_needs_the_middleware() -> None:
    from geofence import Decision

    decision = Decision(False, 451, "4E091", "enforce", (), "v", None, None)
    with pytest.raises(RuntimeError, match="GeofenceMiddleware must run before"):
        denial_parts(decision, {"type": "http", "headers": [], "state": {}})


# --- Litestar -----------------------------------------------------------------------------------------------


@pytest.fixture
def guard_module() -> Any:
    pytest.importorskip("litestar")
    import geofence.litestar

    return geofence.litestar


def litestar_app(reached: list[str], **options: Any) -> Any:
    from litestar import Litestar, get

    from geofence.litestar import require_class

    @get("/weights", guards=[require_class("4E091")], sync_to_thread=False)
    def weights() -> str:
        reached.append("weights")
        return "weights"

    return Litestar([weights], **options)


async def test_litestar_guard_without_the_middleware_fails_closed(guard_module: Any) -> None:
    reached: list[str] = []
    response = await get(litestar_app(reached, exception_handlers=guard_module.exception_handlers), "/weights")
    assert response.status_code == 500 and reached == []


async def test_litestar_guard_refuses_to_run_without_its_exception_handler(guard_module: Any, country_db: Path) -> None:
    """Without the handler Litestar would render a denial its own way (no ``no-store``, its own body): the guard
    refuses every request instead, allowed ones included, so the missing wiring shows at once."""
    reached: list[str] = []
    app = GeofenceMiddleware(litestar_app(reached), config=config(country_db))
    for peer in ("8.8.8.8", "5.8.1.1"):  # allowed, denied
        assert (await get(app, "/weights", peer)).status_code == 500
    assert reached == []
    guard: Any = guard_module.require_class("4E091")
    unwired = SimpleNamespace(resolve_exception_handlers=dict)
    with pytest.raises(RuntimeError, match=r"exception_handlers=geofence\.litestar\.exception_handlers"):
        guard(SimpleNamespace(scope={"type": "http", "state": {}}), unwired)


async def test_litestar_guard_allows_and_denies(guard_module: Any, country_db: Path) -> None:
    reached: list[str] = []
    handlers = guard_module.exception_handlers
    app = GeofenceMiddleware(litestar_app(reached, exception_handlers=handlers), config=config(country_db))
    assert (await get(app, "/weights")).text == "weights"
    denied = await get(app, "/weights", "5.8.1.1")
    assert denied.status_code == 451 and denied.headers["cache-control"] == "private, no-store"
    assert denied.json()["export_class"] == "4E091"
    assert reached == ["weights"]


# --- Django -------------------------------------------------------------------------------------------------


@pytest.fixture
def django_app() -> Any:
    pytest.importorskip("django")
    from .e2e import django_app

    return django_app


def test_django_views_keep_their_kind(django_app: Any) -> None:
    """Django runs a view in a thread or on the loop by what it is: the decorator must not change that."""
    from asgiref.sync import iscoroutinefunction

    assert iscoroutinefunction(django_app.weights_async) and not iscoroutinefunction(django_app.weights_sync)
    assert django_app.weights_sync.__name__ == "weights_sync"


def test_django_under_wsgi_fails_closed(django_app: Any) -> None:
    from django.test import RequestFactory

    request = RequestFactory().get("/weights-sync")  # a WSGIRequest: no ASGI scope, no geofence facts
    with pytest.raises(RuntimeError, match="ASGI handler behind GeofenceMiddleware"):
        django_app.weights_sync(request)
    with pytest.raises(RuntimeError, match="ASGI handler behind GeofenceMiddleware"):
        asyncio.run(django_app.weights_async(request))


def test_django_without_the_middleware_fails_closed(django_app: Any) -> None:
    from django.test import AsyncRequestFactory

    request = AsyncRequestFactory().get("/weights-async")  # an ASGIRequest, but nothing decided it
    with pytest.raises(RuntimeError, match="GeofenceMiddleware must run before"):
        django_app.weights_sync(request)
    with pytest.raises(RuntimeError, match="GeofenceMiddleware must run before"):
        asyncio.run(django_app.weights_async(request))


async def test_django_asgi_handler_without_the_middleware_answers_500(django_app: Any) -> None:
    for path in ("/weights-sync", "/weights-async"):
        assert (await get(django_app.application(), path)).status_code == 500


async def test_django_decorator_allows_and_denies(django_app: Any, country_db: Path) -> None:
    app = GeofenceMiddleware(django_app.application(), config=config(country_db))
    for path in ("/weights-sync", "/weights-async"):
        assert (await get(app, path)).status_code == 200
        denied = await get(app, path, "5.8.1.1")
        assert denied.status_code == 451 and denied.headers["cache-control"] == "private, no-store"
        assert denied.headers["content-length"] == str(len(denied.content))
