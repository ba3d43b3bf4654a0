"""End to end in a real browser: headless Chromium loads a 451 page from a real uvicorn on 127.0.0.1.

Chromium sends its own ``Accept`` (a browser's), so the middleware picks the HTML page by itself. A tiny ASGI
wrapper stands in for a reverse proxy on the same host and adds ``X-Forwarded-For: 5.8.1.1`` (a Russian
address in the test database), because a browser cannot set that header. Skipped when no Chromium is installed
(``.ci/run`` installs Debian's ``chromium`` where it can).

``GEOFENCE_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/e2e/test_denial_browser.py`` also writes the screenshot
to ``docs/denial-451.png`` (the README shows it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.cli.demo import RunningServer

from ..conftest import ROOT, wait_until

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no headless browser on PATH (chromium, chromium-browser or google-chrome)"
)
SCREENSHOT = ROOT / "docs" / "denial-451.png"
WIDTH, HEIGHT = 820, 760


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"the weights"})


def behind_a_proxy(inner: Any, client: bytes) -> Any:
    """What a reverse proxy on 127.0.0.1 does: append the client it saw to X-Forwarded-For."""

    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [*scope["headers"], (b"x-forwarded-for", client)]}
        await inner(scope, receive, send)

    return proxy


@pytest.fixture
def served(country_db: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A denied page's URL on a real uvicorn, and the audit trail the denials go to."""
    trail = tmp_path / "audit.jsonl"
    config = {
        "geoip": {"databases": [str(country_db)]},
        "proxies": {"trusted": ["127.0.0.1/32"]},
        "classes": {
            "EAR99": {"deny_destinations": ["embargoed"], "unknown_location": "allow"},
            "4E091": {"allow_destinations": ["US"]},
        },
        "routes": [{"path": "/weights/**", "class": "4E091"}],
        "response": {"blocked_by": "https://example.com/export-controls", "contact": "export-help@example.com"},
        "audit": {"path": str(trail)},
    }
    middleware = GeofenceMiddleware(app, config=config)
    try:
        with RunningServer(behind_a_proxy(middleware, b"5.8.1.1")) as server:
            yield f"http://127.0.0.1:{server.port}/weights/model.safetensors", trail
    finally:
        middleware.close()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",  # our own page on loopback; the sandbox needs user namespaces many CI containers lack
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def audited_ids(trail: Path, export_class: str) -> list[str]:
    """The request ids of the 451s of *export_class* in the audit trail (whole lines only: it is being written)."""
    lines = trail.read_text().splitlines(keepends=True) if trail.exists() else []
    records = [json.loads(line) for line in lines if line.endswith("\n")]
    return [r["request_id"] for r in records if r["class"] == export_class and r["status"] == 451]


def test_chromium_renders_the_451_page_with_the_audited_request_id(served: tuple[str, Path], tmp_path: Path) -> None:
    url, trail = served
    result = chromium(tmp_path, "--dump-dom", url)
    dom = result.stdout
    assert "<h1>This page is not available to you</h1>" in dom
    assert 'href="mailto:export-help@example.com"' in dom
    assert "destination RU is not allowed for class 4E091" in dom
    assert "<script" not in dom
    assert "Content Security Policy" not in result.stderr  # the CSP blocked nothing the page needs
    shown = re.search(r"<dt>Request id</dt><dd><code>([^<]+)</code>", dom)
    assert shown is not None, dom
    assert wait_until(lambda: shown.group(1) in audited_ids(trail, "4E091"))  # written by the writer thread


def test_chromium_screenshot_of_the_451_page_is_not_blank(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    png = tmp_path / "denial-451.png"
    chromium(tmp_path, f"--screenshot={png}", url)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    try:
        from PIL import Image
    except ImportError:  # pillow is optional: a blank page compresses to a few hundred bytes, text does not
        assert len(data) > 10_000, len(data)
    else:
        with Image.open(png) as image:
            colours = image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT) or []
        assert len(colours) > 50, len(colours)  # text, antialiasing, a tinted box, links: many colours
        dark = sum(count for count, (r, g, b) in colours if r + g + b < 200)
        assert dark > 1000, dark  # dark text on a light background, not an error page in grey
    if os.environ.get("GEOFENCE_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, SCREENSHOT)
