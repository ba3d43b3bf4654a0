"""End to end: uvicorn (one worker, ``--no-proxy-headers``, 127.0.0.1) under ``wrk``, bare vs geofence.

Both servers (``benchmarks.apps:bare`` and ``benchmarks.apps:protected``, the example policy trusting
127.0.0.1 as a proxy) stay up for the whole section and are measured in turn, round after round, the order
alternating. A wrk Lua script sends ``GET /v1/models`` with ``X-Forwarded-For`` drawn at random from a pool of
1,000 and of 100,000 random public IPv4 clients, and its ``done()`` prints the throughput and the latency
percentiles. Ratios are medians of each round's back-to-back pair.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, Table, median, public_ipv4

APPS = {"bare": "benchmarks.apps:bare", "geofence": "benchmarks.apps:protected"}
CONNECTIONS = 32
LUA = r"""
-- wrk script: GET /v1/models with X-Forwarded-For from a pool of clients (one address per line in args[1])
local pool = {}
function init(args)
  for line in io.lines(args[1]) do
    pool[#pool + 1] = wrk.format("GET", "/v1/models", {["X-Forwarded-For"] = line})
  end
  math.randomseed(tonumber(args[2]) or 1)
end
function request()
  return pool[math.random(#pool)]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d mean=%.1f p50=%d p90=%d p99=%d p999=%d max=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(target: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--log-level", "warning", "--no-access-log", "--no-proxy-headers"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{target} did not start")


def _wrk(port: int, seconds: float, script: Path, pool: Path, seed: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
         f"http://127.0.0.1:{port}/v1/models", "--", str(pool), str(seed)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"^BENCH (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    values = {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    values["rps"] = values["requests"] / (values["duration_us"] / 1e6)
    return values


def measure(pools: Sequence[int], seconds: float, rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "connections": CONNECTIONS, "pools": {}}
    with tempfile.TemporaryDirectory(prefix="geofence-e2e-") as tmp:
        script = Path(tmp) / "pool.lua"
        script.write_text(LUA)
        files = {}
        for size in pools:
            files[size] = Path(tmp) / f"pool-{size}.txt"
            files[size].write_text("\n".join(public_ipv4(random.Random(size), size)) + "\n")
        servers = {name: _serve(target) for name, target in APPS.items()}
        try:
            for size in pools:
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in APPS}
                for _, port in servers.values():
                    _wrk(port, 1, script, files[size], 99)  # warm up: code paths, caches
                for r in range(rounds):
                    order = list(APPS) if r % 2 == 0 else list(reversed(APPS))
                    for name in order:
                        runs[name].append(_wrk(servers[name][1], seconds, script, files[size], r + 1))
                out["pools"][str(size)] = _summarise(runs)
                log(f"  pool of {size:,} clients done")
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    return out


def _summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    keys = ("rps", "mean", "p50", "p90", "p99", "p999", "max", "non2xx", "errors", "requests")
    out: dict[str, Any] = {name: {k: median([run[k] for run in rs]) for k in keys} for name, rs in runs.items()}
    pairs = list(zip(runs["bare"], runs["geofence"], strict=True))
    ratios = [g["rps"] / b["rps"] for b, g in pairs]
    out["throughput_ratio"] = median(ratios)
    out["throughput_range"] = [min(ratios), max(ratios)]
    out["p99_ratio"] = median([g["p99"] / b["p99"] for b, g in pairs])
    out["p50_ratio"] = median([g["p50"] / b["p50"] for b, g in pairs])
    return out


def table(result: dict[str, Any]) -> Table:
    rows = []
    for size, r in result["pools"].items():
        for name in APPS:
            x = r[name]
            rows.append([f"{int(size):,} clients, {name}", f"{x['rps']:,.0f}", f"{x['p50'] / 1000:.2f}",
                         f"{x['p99'] / 1000:.2f}", f"{x['p999'] / 1000:.2f}", f"{x['non2xx']:,.0f}"])  # fmt: skip
        low, high = r["throughput_range"]
        ratios = [f"{r['throughput_ratio']:.3f}x", f"{r['p50_ratio']:.2f}x", f"{r['p99_ratio']:.2f}x"]
        rows.append([f"{int(size):,} clients, geofence / bare", *ratios, "", f"pairs {low:.2f}-{high:.2f}x"])
    return Table(
        "End to end (uvicorn, 1 worker, --no-proxy-headers; wrk -t1 -c32, X-Forwarded-For from a client pool)",
        ["server", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx"],
        rows,
        [f"medians of {result['rounds']} interleaved rounds of {result['seconds']:g} s per server and pool; "
         "non-2xx: 451 answers to clients in embargoed countries"],
    )  # fmt: skip


if __name__ == "__main__":
    from benchmarks.suite import main

    raise SystemExit(main(["--only", "e2e", *sys.argv[1:]]))
