"""End to end: a real uvicorn server on 127.0.0.1, real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import RunningServer, Step, demo_app, request

from ..conftest import ROOT


def policy(country_db: Path, trusted: list[str]) -> dict[str, Any]:
    return {
        "geoip": {"databases": [str(country_db)]},
        "proxies": {"trusted": trusted},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"]},
        },
        "routes": [{"path": "/weights/**", "class": "4E091"}],
        "response": {"blocked_by": "https://example.com/export-controls"},
    }


@pytest.fixture
def server(country_db: Path) -> Any:
    app = GeofenceMiddleware(demo_app, config=policy(country_db, ["127.0.0.1/32"]))
    with RunningServer(app) as running:
        yield running


def test_http_through_a_trusted_proxy(server: RunningServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base) as client:
        ok = client.get("/weights/a", headers={"X-Forwarded-For": "8.8.8.8"})
        assert ok.status_code == 200
        assert ok.json()["decision"]["facts"]["location"]["country"] == "US"
        denied = client.get("/anything", headers={"X-Forwarded-For": "5.8.1.1"})
        assert denied.status_code == 451
        assert denied.headers["link"] == '<https://example.com/export-controls>; rel="blocked-by"'
        assert denied.headers["cache-control"] == "private, no-store"
        assert denied.json()["reasons"][0]["code"] == "destination_denied"
        chain = client.get("/weights/a", headers=[("X-Forwarded-For", "5.8.1.1"), ("X-Forwarded-For", "8.8.8.8")])
        assert chain.status_code == 200  # two header lines are one list; the rightmost untrusted entry wins


def test_untrusted_peer_cannot_forge_its_location(server: RunningServer) -> None:
    status, _, body = request(server.port, Step("forged", "GET", "/weights/a", "8.8.8.8", source="127.0.0.2"))
    assert status == 451
    assert json.loads(body)["reasons"][0]["code"] == "location_unknown"  # 127.0.0.2 is loopback, not the US


def test_post_body_reaches_the_app(country_db: Path) -> None:
    config = policy(country_db, ["127.0.0.1/32"])
    config["routes"].append({"method": "POST", "path": "/v1/messages", "json_field": "model", "equals": ["mythos-5"],
                             "class": "4E091"})  # fmt: skip
    with RunningServer(GeofenceMiddleware(demo_app, config=config)) as running, httpx.Client() as client:
        url = f"http://127.0.0.1:{running.port}/v1/messages"
        big = json.dumps({"model": "haiku", "pad": "x" * 200_000})
        assert client.post(url, content=big, headers={"X-Forwarded-For": "8.8.8.8"}).status_code == 200
        denied = client.post(url, content='{"model": "mythos-5"}', headers={"X-Forwarded-For": "81.2.69.1"})
        assert denied.status_code == 451 and denied.json()["export_class"] == "4E091"


def test_websocket_handshakes(server: RunningServer) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{server.port}"
        async with websockets.connect(f"{url}/weights/stream", additional_headers={"X-Forwarded-For": "8.8.8.8"}) as ws:
            message = json.loads(await ws.recv())
            assert message["decision"]["export_class"] == "4E091" and message["decision"]["allowed"]
        with pytest.raises(InvalidStatus) as denied:
            async with websockets.connect(f"{url}/weights/stream", additional_headers={"X-Forwarded-For": "81.2.69.1"}):
                pass
        response = denied.value.response
        assert response.status_code == 451  # the server's WebSocket Denial Response extension
        assert json.loads(response.body)["reasons"][0]["code"] == "destination_not_allowed"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("allow_ips", "status", "code"),
    [
        ("127.0.0.1", 200, None),  # uvicorn resolves exactly as geofence would: accepted
        ("*", 451, "client_address_invalid"),  # uvicorn trusts everything and takes the forged leftmost: refused
    ],
)
def test_server_side_proxy_headers_are_detected(
    country_db: Path, allow_ips: str, status: int, code: str | None
) -> None:
    app = GeofenceMiddleware(demo_app, config=policy(country_db, ["127.0.0.1/32"]))
    with RunningServer(app, proxy_headers=True, forwarded_allow_ips=allow_ips) as running, httpx.Client() as client:
        response = client.get(
            f"http://127.0.0.1:{running.port}/weights/a", headers={"X-Forwarded-For": "5.8.1.1, 8.8.8.8"}
        )
        assert response.status_code == status
        if code is not None:  # the specific cause is logged; the response says only that the address is untrusted
            assert response.json()["reasons"][0]["code"] == code


def test_demo_tour(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # the demo key goes here, not in the user's home
    result = subprocess.run(
        [sys.executable, "-m", "geofence", "demo", "--tour"], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    statuses = [line.split()[1] for line in result.stdout.splitlines() if line.strip().startswith("->")]
    assert statuses == ["200", "451", "200", "401", "200", "451", "451", "401", "451", "451", "451", "451", "200"]
    assert "untrusted peer 127.0.0.2" in result.stdout
    assert "curl -s http://127.0.0.1:8000/" in result.stdout
    assert (tmp_path / "geofence" / "demo-signing-key.pem").stat().st_mode & 0o077 == 0  # private to its owner
