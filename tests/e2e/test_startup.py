"""Start-up with an invalid policy, against real servers started as their command-line tools would be.

``app.add_middleware(GeofenceMiddleware, config="bad.toml")`` on a Starlette app: Starlette builds the
middleware only inside the server, so geofence cannot raise at import time. It must make the server refuse
to start (lifespan ``startup.failed`` with a one-line reason), and without lifespan answer every request with
a 503 ``application/problem+json`` that shows no traceback and no path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ROOT
from .test_servers import free_port, stop, wait_for_port

CONFIG_ENV = "GEOFENCE_E2E_BAD_CONFIG"
REFUSAL = "geofence: invalid configuration, refusing to serve:"

BAD_POLICIES = {
    "unknown key": ("[classes.EAR99]\ndeny_destinations = []\nunknown_key = 1\n", "classes.ear99.unknown_key"),
    "toml syntax": ("[classes.EAR99\ndeny_destinations = [\n", "toml syntax error"),
    "missing file": (None, "no such file"),
}


def bad_app() -> Any:
    """Factory for the servers: a Starlette app with geofence added the documented way."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from geofence import GeofenceMiddleware

    async def hello(request: Any) -> Any:
        return PlainTextResponse("the app itself must never answer")

    app = Starlette(routes=[Route("/", hello), Route("/v1/messages", hello)])
    app.add_middleware(GeofenceMiddleware, config=os.environ[CONFIG_ENV])
    return app


@pytest.fixture(params=list(BAD_POLICIES))
def bad_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    text, hint = BAD_POLICIES[request.param]
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    return path, hint


def command(server: str, port: int, *extra: str) -> list[str]:
    target = "tests.e2e.test_startup:bad_app"
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ]
    if server == "hypercorn":
        pytest.importorskip("hypercorn")
        return [sys.executable, "-m", "hypercorn", f"{target}()", "--bind", f"127.0.0.1:{port}", *extra]
    if server == "granian":
        pytest.importorskip("granian")
        return [sys.executable, "-m", "granian", "--factory", target, "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", *extra]  # fmt: skip
    raise ValueError(server)


def run(args: list[str], config: Path, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run a server that must refuse to start; fail (and stop it) if it is still running after *timeout*."""
    env = {**os.environ, CONFIG_ENV: str(config), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and any workers it spawned
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"the server was still running {timeout} s after start with an invalid policy:\n"
                    f"{(stdout + stderr)[-2000:]}")  # fmt: skip
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def reason_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if REFUSAL in line]


@pytest.mark.parametrize(
    ("server", "extra", "nonzero"),
    [
        ("uvicorn", (), True),
        ("hypercorn", ("--workers", "0"), True),  # hypercorn serves in its own process
        ("hypercorn", (), None),  # a worker process: it dies with the reason, but the parent exits 0 (hypercorn)
        ("granian", ("--interface", "asgi"), True),
    ],
    ids=["uvicorn", "hypercorn --workers 0", "hypercorn", "granian"],
)
def test_server_refuses_to_start(server: str, extra: tuple[str, ...], nonzero: bool | None,
                                 bad_config: tuple[Path, str]) -> None:  # fmt: skip
    config, hint = bad_config
    result = run(command(server, free_port(), *extra), config)
    output = result.stdout + result.stderr
    if nonzero is not None:  # in every case it has exited (run() fails if it is still serving)
        assert (result.returncode != 0) == nonzero, (result.returncode, output[-2000:])
    lines = reason_lines(output)
    assert lines, f"no start-up refusal reason in the server output:\n{output[-2000:]}"
    assert any(hint in line.lower() for line in lines), lines  # the specific reason is on that one line
    if server == "uvicorn":
        assert "Application startup failed" in output
        assert "Traceback" not in output, output[-3000:]


@pytest.fixture
def unconfigured(request: pytest.FixtureRequest, bad_config: tuple[Path, str]) -> Iterator[tuple[int, Path]]:
    """A server without lifespan, serving the app with the bad policy."""
    server, extra = request.param
    config, _ = bad_config
    port = free_port()
    env = {**os.environ, CONFIG_ENV: str(config), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command(server, port, *extra), cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        try:
            wait_for_port(port, lambda: process.poll() is None)
        except RuntimeError:
            process.kill()
            raise RuntimeError(process.communicate(timeout=10)[0].decode(errors="replace")[-3000:]) from None
        yield port, config
    finally:
        stop(process)


@pytest.mark.parametrize(
    "unconfigured",
    [("uvicorn", ("--lifespan", "off")), ("granian", ("--interface", "asginl"))],
    ids=["uvicorn --lifespan off", "granian --interface asginl"],
    indirect=True,
)
def test_without_lifespan_every_request_is_503(unconfigured: tuple[int, Path]) -> None:
    port, config = unconfigured
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for method, path, headers in [
            ("GET", "/", {}),
            ("POST", "/v1/messages", {"X-Forwarded-For": "8.8.8.8"}),
            ("GET", "/nowhere", {"Accept": "text/html"}),
        ]:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 503, (method, path, response.status_code, response.text[:300])
            body = response.text
            assert "Traceback" not in body and 'File "' not in body
            assert str(config) not in body and "bad.toml" not in body, body
            assert response.headers["cache-control"] == "private, no-store"
            assert response.headers.get("retry-after") == "30"
            if "html" in headers.get("Accept", ""):
                assert response.headers["content-type"].startswith("text/html")
            else:
                assert response.headers["content-type"] == "application/problem+json"
                problem = json.loads(body)
                assert problem["status"] == 503 and problem["reasons"][0]["code"] == "error"


@pytest.mark.parametrize("unconfigured", [("uvicorn", ("--lifespan", "off"))], ids=["uvicorn --lifespan off"],
                         indirect=True)  # fmt: skip
def test_without_lifespan_websocket_is_refused(unconfigured: tuple[int, Path]) -> None:
    import asyncio

    websockets = pytest.importorskip("websockets")
    from websockets.exceptions import InvalidStatus

    port, _ = unconfigured

    async def connect() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws"):
                pass
        assert refused.value.response.status_code == 503
        assert b"Traceback" not in (refused.value.response.body or b"")

    asyncio.run(connect())
