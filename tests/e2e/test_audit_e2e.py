"""The audit trail wired into the middleware, under a real uvicorn: what is recorded, that the chain verifies
with the CLI, full IPs only when asked, and failing closed when the trail cannot be written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import RunningServer, demo_app

from ..conftest import ROOT, wait_until


def policy(country_db: Path, audit: dict[str, Any]) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "proxies": {"trusted": ["127.0.0.1/32"]},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "OPEN": {"unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"]},
        },
        "defaults": {"class": "OPEN"},
        "routes": [{"path": "/weights/**", "class": "4E091"}, {"path": "/docs/**", "class": "EAR99"}],
        "health": {"path": "/health"},
        "audit": audit,
    }


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_controlled_decisions_are_audited_and_the_chain_verifies(country_db: Path, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    app = GeofenceMiddleware(demo_app, config=policy(country_db, {"path": str(trail)}))
    try:
        with RunningServer(app) as running, httpx.Client(base_url=f"http://127.0.0.1:{running.port}") as client:
            us, ru = {"X-Forwarded-For": "8.8.8.8"}, {"X-Forwarded-For": "5.8.1.1"}
            assert client.get("/weights/a", headers={**us, "X-Request-ID": "r-1"}).status_code == 200
            assert client.get("/weights/a", headers=ru).status_code == 451
            assert client.get("/docs/a", headers=us).status_code == 200  # EAR99 restricts (embargoes): audited
            assert client.get("/open/a", headers=ru).status_code == 200  # OPEN restricts nobody: not audited
            assert wait_until(lambda: trail.exists() and len(trail.read_text().splitlines()) == 3)
    finally:
        app.close()
    found = records(trail)
    assert [(r["outcome"], r["class"], r["status"]) for r in found] == [
        ("allow", "4E091", 200), ("deny", "4E091", 451), ("allow", "EAR99", 200),
    ]  # fmt: skip
    assert found[0]["request_id"] == "r-1"
    assert found[0]["facts"]["location"]["country"] == "US" and "client_ip" not in found[0]["facts"]
    assert found[1]["reasons"][0]["code"] == "destination_not_allowed"
    verify = subprocess.run(
        [sys.executable, "-m", "geofence", "audit", "verify", str(trail)], capture_output=True, text=True, cwd=ROOT
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_full_ip_only_when_asked(country_db: Path, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    app = GeofenceMiddleware(demo_app, config=policy(country_db, {"path": str(trail), "full_ip": True}))
    try:
        with RunningServer(app) as running, httpx.Client(base_url=f"http://127.0.0.1:{running.port}") as client:
            client.get("/weights/a", headers={"X-Forwarded-For": "8.8.8.8"})
            assert wait_until(lambda: trail.exists() and trail.read_text().strip() != "")
    finally:
        app.close()
    assert records(trail)[0]["facts"]["client_ip"] == "8.8.8.8"


def test_an_unwritable_trail_fails_closed_under_on_failure_deny(country_db: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the audit directory should be")
    audit = {"path": str(blocker / "audit.jsonl"), "on_failure": "deny"}
    app = GeofenceMiddleware(demo_app, config=policy(country_db, audit))
    try:
        with RunningServer(app) as running, httpx.Client(base_url=f"http://127.0.0.1:{running.port}") as client:
            us = {"X-Forwarded-For": "8.8.8.8"}
            client.get("/weights/a", headers=us)  # the first record fails to write...
            deadline = time.monotonic() + 5
            while app._state is not None and app._state.audit is not None and not app._state.audit.failing:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = client.get("/weights/a", headers=us)  # ...so what cannot be recorded is not served
            assert refused.status_code == 503
            assert refused.json()["reasons"][0]["code"] == "audit_unavailable"
            assert client.get("/open/a", headers=us).status_code == 200  # a class that restricts nobody
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["audit"]["failing"] is True
    finally:
        app.close()
