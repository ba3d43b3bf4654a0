"""Prometheus metrics with the real prometheus_client: the default registry, make_asgi_app under a real
uvicorn, and multiprocess mode across real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from geofence.asgi.middleware import GeofenceMiddleware  # noqa: E402
from geofence.cli.demo import RunningServer  # noqa: E402
from geofence.evidence.metrics import metrics  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .test_middleware import Recorder, send  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(country_db: Path, **extra: Any) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "classes": {"EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"}},
        "metrics": {"enabled": True},
        **extra,
    }


def value(name: str, **labels: str) -> float:
    found = prometheus_client.REGISTRY.get_sample_value(name, labels or None)
    return 0.0 if found is None else float(found)


async def test_requests_misses_denials_and_reloads_are_counted(country_db: Path) -> None:
    before = {
        "requests": value("geofence_requests_total"),
        "misses": value("geofence_cache_misses_total"),
        "denied": value("geofence_decisions_total", export_class="EAR99", outcome="deny", reason="destination_denied"),
        "loads": value("geofence_reloads_total", result="ok"),
        "timed": value("geofence_decision_seconds_count"),
    }
    middleware = GeofenceMiddleware(Recorder(), config=config(country_db))
    for _ in range(10):
        # 2 misses (the front cache admits a client on its second request), 8 hits
        assert (await send(middleware, "GET", "/x", peer="8.8.8.8")).status_code == 200
    assert (await send(middleware, "GET", "/x", peer="5.8.1.1")).status_code == 451  # a miss and a denial
    metrics().flush()
    assert value("geofence_requests_total") - before["requests"] == 11
    assert value("geofence_cache_misses_total") - before["misses"] == 3
    assert value("geofence_decision_seconds_count") - before["timed"] == 3
    denied = value("geofence_decisions_total", export_class="EAR99", outcome="deny", reason="destination_denied")
    assert denied - before["denied"] == 1
    assert value("geofence_reloads_total", result="ok") - before["loads"] == 1  # the load at start
    built = value("geofence_database_build_timestamp_seconds", path=str(country_db))
    assert built == middleware.policy.locator().databases[0].info.build_epoch


def test_metrics_are_served_by_make_asgi_app_under_uvicorn(country_db: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello), Mount("/metrics", app=prometheus_client.make_asgi_app())])
    protected = GeofenceMiddleware(app, config=config(country_db, exempt={"paths": ["/metrics", "/metrics/**"]}))
    with RunningServer(protected) as running, httpx.Client(base_url=f"http://127.0.0.1:{running.port}") as client:
        assert client.get("/hello").status_code == 200  # peer 127.0.0.1: unknown location, allowed for EAR99
        text = client.get("/metrics/").text
    assert "geofence_requests_total" in text and "geofence_decision_seconds_bucket" in text


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from geofence.evidence.metrics import metrics
    from geofence.asgi.middleware import GeofenceMiddleware
    from tests.test_metrics import config
    from tests.test_middleware import Recorder, send
    from pathlib import Path

    async def main():
        middleware = GeofenceMiddleware(Recorder(), config=config(Path({db!r})))
        for peer in ["8.8.8.8"] * 5 + ["5.8.1.1"]:
            await send(middleware, "GET", "/x", peer=peer)
        metrics().flush()

    asyncio.run(main())
    """
)


def test_multiprocess_mode_adds_up_across_workers(country_db: Path, tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    script = WORKER.format(root=str(ROOT), db=str(country_db))
    workers = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT) for _ in range(2)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    reader = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(registry.get_sample_value("geofence_requests_total"),
              registry.get_sample_value("geofence_decisions_total",
                  {"export_class": "EAR99", "outcome": "deny", "reason": "destination_denied"}))
        """
    )
    out = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["12.0", "2.0"]


def test_without_the_setting_prometheus_client_is_never_imported(country_db: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from geofence.asgi.middleware import GeofenceMiddleware
        GeofenceMiddleware(lambda *a: None, config={{"geoip": {{"databases": [{str(country_db)!r}]}},
                                                    "classes": {{"EAR99": {{}}}}}})
        assert "prometheus_client" not in sys.modules, "imported"
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


async def test_audit_queue_and_failures_are_exported(country_db: Path, tmp_path: Path) -> None:
    from .conftest import wait_until

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the audit directory should be")
    before = value("geofence_audit_failures_total", kind="errors")
    middleware = GeofenceMiddleware(Recorder(), config=config(country_db, audit={"path": str(blocker / "a.jsonl")}))
    try:
        assert (await send(middleware, "GET", "/x", peer="5.8.1.1")).status_code == 451  # recorded, not written
        state = middleware._state
        assert state is not None and state.audit is not None
        assert wait_until(lambda: state.audit is not None and state.audit.errors > 0)
        await send(middleware, "GET", "/x", peer="5.8.2.2")  # the next recorded decision copies the counts
        assert value("geofence_audit_failures_total", kind="errors") - before >= 1
        assert value("geofence_audit_queue_depth") >= 0
    finally:
        middleware.close()
