"""Operations: database freshness limits, the health endpoint, and reloads an operator can see."""

from __future__ import annotations

import json
import logging
import re
import time
import types
from pathlib import Path
from typing import Any

import pytest

from geofence.asgi.middleware import GeofenceMiddleware

from .conftest import country, wait_until
from .test_cli import geofence
from .test_middleware import Recorder, send

pytestmark = pytest.mark.anyio

DAY = 86_400
NETWORKS = {"8.8.8.0/24": {"country": country("US")}, "5.8.0.0/16": {"country": country("RU")}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def built_days_ago(monkeypatch: pytest.MonkeyPatch, write_db: Any, name: str, days: float) -> Path:
    """A real database whose metadata says it was built *days* ago (mmdb-writer stamps time.time())."""
    import mmdb_writer

    stamp = time.time() - days * DAY
    with monkeypatch.context() as patch:
        patch.setattr(mmdb_writer, "time", types.SimpleNamespace(time=lambda: stamp))
        path: Path = write_db(name, "GeoIP2-Country", NETWORKS)
    return path


def config(db: Path, **geoip: Any) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(db)], **geoip},
        "defaults": {"class": "EAR99"},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "OPEN": {"unknown_location": "allow"},
        },
        "routes": [{"path": "/open/**", "class": "OPEN"}],
        "exempt": {"networks": ["192.0.2.0/24"]},
        "health": {"path": "/_geofence/health"},
    }


async def test_a_stale_database_warns_once_and_keeps_serving_by_default(
    monkeypatch: pytest.MonkeyPatch, write_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = built_days_ago(monkeypatch, write_db, "old.mmdb", 400)
    middleware = GeofenceMiddleware(Recorder(), config=config(db, max_age_days=30))
    with caplog.at_level(logging.WARNING, logger="geofence"):
        for _ in range(5):
            assert (await send(middleware, "GET", "/x")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "max_age_days" in r.getMessage()]
    assert len(warnings) == 1 and "400 days old" in warnings[0] and "geofence db update" in warnings[0]


async def test_a_stale_database_under_deny_refuses_restricting_classes(
    monkeypatch: pytest.MonkeyPatch, write_db: Any
) -> None:
    db = built_days_ago(monkeypatch, write_db, "old.mmdb", 40)
    middleware = GeofenceMiddleware(Recorder(), config=config(db, max_age_days=30, on_stale="deny"))
    refused = await send(middleware, "GET", "/x")  # EAR99 restricts (embargoes): old data cannot decide it
    assert refused.status_code == 503
    assert refused.json()["reasons"] == [{"code": "database_stale", "detail": "the location data is out of date"}]
    assert (await send(middleware, "GET", "/open/x")).status_code == 200  # restricts nobody
    assert (await send(middleware, "GET", "/x", peer="192.0.2.9")).status_code == 200  # exempt network
    assert (await send(middleware, "GET", "/x", peer="5.8.1.1")).status_code == 451  # denials stay denials


async def test_a_database_becomes_stale_while_running(monkeypatch: pytest.MonkeyPatch, write_db: Any) -> None:
    db = built_days_ago(monkeypatch, write_db, "aging.mmdb", 29.99)
    middleware = GeofenceMiddleware(Recorder(), config=config(db, max_age_days=30, on_stale="deny"))
    assert (await send(middleware, "GET", "/x")).status_code == 200  # cached as allowed...
    state = middleware._state
    assert state is not None and state.stale_at is not None
    monkeypatch.setattr(state, "stale_at", time.time() - 1)  # ...the limit passes without a reload
    assert (await send(middleware, "GET", "/x")).status_code == 503


async def test_health_endpoint_is_answered_by_geofence(monkeypatch: pytest.MonkeyPatch, write_db: Any) -> None:
    fresh = write_db("fresh.mmdb", "GeoIP2-Country", NETWORKS)
    recorder = Recorder()
    middleware = GeofenceMiddleware(recorder, config=config(fresh, max_age_days=30, on_stale="deny"))
    response = await send(middleware, "GET", "/_geofence/health", peer="5.8.1.1")  # never decided, never the app
    assert response.status_code == 200 and recorder.calls == []
    body = response.json()
    assert body["status"] == "ok" and body["policy_version"] == middleware.policy.version
    assert body["databases"][0]["fresh"] is True and body["databases"][0]["age_days"] == 0
    assert response.headers["cache-control"] == "no-store"
    old = built_days_ago(monkeypatch, write_db, "old.mmdb", 45)
    stale = GeofenceMiddleware(Recorder(), config=config(old, max_age_days=30, on_stale="deny"))
    response = await send(stale, "GET", "/_geofence/health")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    warn = GeofenceMiddleware(Recorder(), config=config(old, max_age_days=30))
    response = await send(warn, "GET", "/_geofence/health")
    assert response.status_code == 200 and response.json()["status"] == "stale"


async def test_reloads_are_logged_with_build_dates_and_counted(
    monkeypatch: pytest.MonkeyPatch, write_db: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = built_days_ago(monkeypatch, write_db, "live.mmdb", 10)
    path = tmp_path / "geofence.toml"
    path.write_text(f'[geoip]\ndatabases = ["{db}"]\n[classes.EAR99]\n[health]\npath = "/health"\n')
    middleware = GeofenceMiddleware(Recorder(), config=str(path), reload_interval=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="geofence"):
            write_db("next.mmdb", "GeoIP2-Country", NETWORKS).replace(db)
            assert wait_until(lambda: middleware._live.reloads["ok"] == 1)
            path.write_text("[classes\n")  # an invalid change is refused and says why
            assert wait_until(lambda: middleware._live.reloads["refused"] == 1)
        messages = [r.getMessage() for r in caplog.records]
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert any(f"{db}: built " in m and f"-> {today}" in m for m in messages), messages
        body = (await send(middleware, "GET", "/health")).json()
        assert body["reloads"] == {"ok": 1, "refused": 1}
        assert body["last_reload"]["ok"] is False and "TOML syntax error" in body["last_reload"]["error"]
    finally:
        middleware.close()


def test_policy_validate_and_check_report_staleness(
    monkeypatch: pytest.MonkeyPatch, write_db: Any, tmp_path: Path
) -> None:
    db = built_days_ago(monkeypatch, write_db, "old.mmdb", 100)
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[geoip]\ndatabases = ["{db}"]\nmax_age_days = 30\non_stale = "deny"\n'
        '[classes.EAR99]\ndeny_destinations = ["CU"]\n'
    )
    validated = geofence("policy", "validate", str(path))
    assert validated.returncode == 0 and "warning" in validated.stderr and "100 days old" in validated.stderr
    checked = geofence("check", "--config", str(path), "--ip", "8.8.8.8", "--json")
    assert checked.returncode == 1
    decision = json.loads(checked.stdout)
    assert decision["status"] == 503 and decision["reasons"][0]["code"] == "database_stale"
    assert any("max_age_days = 30" in line for line in decision["trace"])


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_decision_log_lines_carry_the_request_id_in_either_format(
    write_db: Any, caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    db = write_db("fresh.mmdb", "GeoIP2-Country", NETWORKS)
    policy = {**config(db), "logging": {"format": fmt}, "proxies": {"trusted": ["10.0.0.0/8"]}}
    middleware = GeofenceMiddleware(Recorder(), config=policy)
    proxied = {"x-forwarded-for": "5.8.1.1"}  # a trusted proxy's X-Request-ID is taken (request/ids.py)
    with caplog.at_level(logging.INFO, logger="geofence.decision"):
        await send(
            middleware, "GET", "/x%0D%0Ainjected", peer="10.0.0.1", headers={**proxied, "x-request-id": "req-42.a"}
        )
        await send(middleware, "GET", "/y", peer="10.0.0.1", headers={**proxied, "x-request-id": "bad id\n"})
    first, second = [r.getMessage() for r in caplog.records if r.name == "geofence.decision"]
    assert "\n" not in first + second
    if fmt == "json":
        record = json.loads(first)
        assert record == {
            "event": "deny", "request_id": "req-42.a", "method": "GET", "path": "/x\r\ninjected",
            "client_network": "5.8.0.0/16", "country": "RU", "class": "EAR99", "status": 451,
            "reasons": ["destination_denied"], "policy": middleware.policy.version,
        }  # fmt: skip
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", json.loads(second)["request_id"])  # unusable id replaced
    else:
        assert first.endswith(" request_id=req-42.a") and "client=5.8.0.0/16 RU" in first
        assert "request_id=bad" not in second


def test_check_resolves_a_live_request_through_the_proxies(write_db: Any, tmp_path: Path) -> None:
    db = write_db("fresh.mmdb", "GeoIP2-Country", NETWORKS)
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[geoip]\ndatabases = ["{db}"]\n[proxies]\ntrusted = ["10.0.0.0/8"]\n'
        '[classes.EAR99]\ndeny_destinations = ["RU"]\nunknown_location = "allow"\n'
    )

    def check(*args: str) -> tuple[int, dict[str, Any]]:
        result = geofence("check", "--config", str(path), "--json", *args)
        return result.returncode, json.loads(result.stdout)

    code, decision = check("--peer", "10.1.1.1", "--header", "X-Forwarded-For: 9.9.9.9, 5.8.1.1")
    assert code == 1 and decision["reasons"][0]["code"] == "destination_denied"  # the proxy's client is in RU
    code, decision = check("--peer", "10.1.1.1", "--header", "X-Forwarded-For: junk")
    assert code == 1 and decision["reasons"][0]["code"] == "client_address_invalid"
    code, decision = check("--peer", "5.8.1.1", "--header", "X-Forwarded-For: 8.8.8.8")  # forged: ignored
    assert code == 1 and decision["facts"]["location"]["country"] == "RU"


def test_check_explains_a_recorded_decision_under_another_policy(write_db: Any, tmp_path: Path) -> None:
    from geofence.evidence.audit import AuditWriter
    from geofence.geoip.locator import Locator
    from geofence.policy.decision import decide
    from geofence.policy.load import parse_policy

    db = write_db("fresh.mmdb", "GeoIP2-Country", NETWORKS)
    old = parse_policy({"geoip": {"databases": [str(db)]}, "classes": {"EAR99": {"deny_destinations": ["CU"]}}})
    with Locator([str(db)]) as locator:
        decision = decide(old, "EAR99", locator.lookup("8.8.8.8"))
    trail = tmp_path / "audit.jsonl"
    with AuditWriter(trail) as writer:
        writer.submit("allow", decision, "req-7", None)
    line = trail.read_text().splitlines()[0]
    stricter = tmp_path / "new.toml"
    stricter.write_text(f'[geoip]\ndatabases = ["{db}"]\n[classes.EAR99]\ndeny_destinations = ["US"]\n')
    result = geofence("check", "--config", str(stricter), "--record", line)
    assert result.returncode == 1, result.stderr
    assert "recorded: allow 200" in result.stdout and "req-7" in result.stdout
    assert "destination US is denied" in result.stdout


def test_db_info_warns_about_an_old_database(monkeypatch: pytest.MonkeyPatch, write_db: Any) -> None:
    db = built_days_ago(monkeypatch, write_db, "old.mmdb", 60)
    old = geofence("db", "info", str(db), "--max-age-days", "30")
    assert old.returncode == 0 and "warning: database older than max_age_days = 30" in old.stderr
    assert geofence("db", "info", str(db), "--max-age-days", "90").stderr == ""
