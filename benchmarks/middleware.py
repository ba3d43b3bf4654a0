"""Per-request cost of GeofenceMiddleware against the same bare app, measured in the same run.

    python benchmarks/middleware.py [--n 20000] [--rounds 7] [--seconds 5] [--no-e2e]

In process (the ASGI call itself, no server, no network):
  * bare Starlette hello-world;
  * the same behind a no-op pure-ASGI middleware (the floor for any middleware);
  * behind GeofenceMiddleware, warm: same client network, same route (the common case);
  * behind GeofenceMiddleware, cache miss: every request from a new database network.
End to end: uvicorn on 127.0.0.1 (one worker) and wrk as the load generator, bare vs protected, interleaved.
Figures are medians over rounds; ratios are against the bare app in the same run.

Shared machines make wall-clock microseconds noisy (±30% between runs here), so ``--instructions`` also
counts CPU instructions per request with valgrind's callgrind, which is repeatable to a fraction of a percent:
each variant runs N and 2N requests in a subprocess, and the difference divided by N is the per-request cost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.apps import make_bare
from benchmarks.lookup import random_public
from geofence.databases import default_database_path
from geofence.demo import demo_policy
from geofence.middleware import GeofenceMiddleware
from geofence.policy import AuditConfig, Policy

ROOT = Path(__file__).resolve().parents[1]


class Noop:
    """The cheapest possible pure-ASGI middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def scope(client: str, path: str = "/v1/models") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"api.example"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": (client, 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


def per_request_us(app: Any, scopes: Sequence[dict[str, Any]]) -> float:
    async def run() -> float:
        start = time.perf_counter_ns()
        for s in scopes:
            await app(dict(s), _receive, _send)
        return (time.perf_counter_ns() - start) / len(scopes) / 1000

    return asyncio.run(run())


def in_process(n: int, rounds: int) -> list[tuple[str, float]]:
    reader = maxminddb.open_database(str(default_database_path()), maxminddb.MODE_MMAP_EXT)
    fresh = random_public(random.Random(7), 4, n * rounds, reader)
    warm = [scope("8.8.8.8")] * n
    results: dict[str, list[float]] = {"bare": [], "noop": [], "warm": [], "lean": [], "audit": [], "miss": []}
    bare, noop = make_bare(), Noop(make_bare())
    protected, lean, audited = _variant_app("warm"), _variant_app("lean"), _variant_app("audit")
    per_request_us(protected, warm[:1000])  # memos warm
    per_request_us(lean, warm[:1000])
    for r in range(rounds):
        results["bare"].append(per_request_us(bare, warm))
        results["noop"].append(per_request_us(noop, warm))
        results["warm"].append(per_request_us(protected, warm))
        results["lean"].append(per_request_us(lean, warm))
        results["audit"].append(per_request_us(audited, warm))
        miss_scopes = [scope(ip) for ip in fresh[r * n : (r + 1) * n]]
        results["miss"].append(per_request_us(protected, miss_scopes))
    return [(name, statistics.median(values)) for name, values in results.items()]


VARIANTS = ("bare", "noop", "warm", "lean", "audit", "miss")


def _variant_app(name: str) -> Any:
    if name == "bare":
        return make_bare()
    if name == "noop":
        return Noop(make_bare())
    policy = demo_policy(None)
    assert isinstance(policy, Policy)
    if name == "audit":  # every request on a restricting class goes to the audit trail (a temporary file)
        trail = Path(tempfile.mkdtemp(prefix="geofence-bench-")) / "audit.jsonl"
        policy = dataclasses.replace(policy, audit=AuditConfig(path=str(trail)))
    if name == "lean":  # without marking responses private (it wraps the app's send)
        policy = dataclasses.replace(policy, private_cache=False)
    return GeofenceMiddleware(make_bare(), config=policy)


def _run_variant(name: str, n: int) -> None:
    """Body of the callgrind subprocess: n requests of one variant (after the same set-up for every n)."""
    app = _variant_app(name)
    reader = maxminddb.open_database(str(default_database_path()), maxminddb.MODE_MMAP_EXT)
    fresh = random_public(random.Random(7), 4, 4000, reader)
    per_request_us(app, [scope("8.8.8.8")] * 200)  # the same warm-up for every n
    scopes = [scope(ip) for ip in fresh[:n]] if name == "miss" else [scope("8.8.8.8")] * n
    per_request_us(app, scopes)


def instructions(n: int = 1000) -> dict[str, float]:
    """Instructions per request for each variant, from callgrind totals at n and 2n requests."""
    out = {}
    for name in VARIANTS:
        totals = []
        for count in (n, 2 * n):
            result = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
                 "--callgrind-variant", name, "--n", str(count)],
                capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
            )  # fmt: skip
            match = re.search(r"Collected : (\d+)", result.stderr)
            if match is None:
                raise RuntimeError(result.stderr[-2000:])
            totals.append(int(match.group(1)))
        out[name] = (totals[1] - totals[0]) / n
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(target: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning", "--no-access-log",
         "--no-proxy-headers"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{target} did not start")


def _wrk(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-H", "X-Forwarded-For: 8.8.8.8", f"http://127.0.0.1:{port}/v1/models"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(out)
    return float(match.group(1))


def end_to_end(seconds: int, rounds: int) -> dict[str, Any]:
    """Bare and protected, interleaved; the ratio is the median of each back-to-back pair's ratio."""
    results: dict[str, list[float]] = {"bare": [], "protected": []}
    for _ in range(rounds):
        for name, target in (("bare", "benchmarks.apps:bare"), ("protected", "benchmarks.apps:protected")):
            process, port = _serve(target)
            try:
                _wrk(port, 1)  # warm up
                results[name].append(_wrk(port, seconds))
            finally:
                process.terminate()
                process.wait(timeout=10)
    ratios = [p / b for b, p in zip(results["bare"], results["protected"], strict=True)]
    return {
        "bare": statistics.median(results["bare"]),
        "protected": statistics.median(results["protected"]),
        "ratio": statistics.median(ratios),
        "range": (min(ratios), max(ratios)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="requests per in-process round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; medians are reported (default 7)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per end-to-end run (default 5)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn + wrk measurement")
    parser.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    parser.add_argument("--callgrind-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callgrind_variant:
        _run_variant(args.callgrind_variant, args.n)
        return 0

    rows = dict(in_process(args.n, args.rounds))
    base = rows["bare"]
    print(f"python {sys.version.split()[0]}, {args.n} requests per round, median of {args.rounds} rounds\n")
    print("in process (ASGI call, no server)            µs/request   added vs bare   ratio")
    labels: dict[str, str] = {
        "bare": "bare Starlette hello-world",
        "noop": "+ no-op pure-ASGI middleware",
        "warm": "+ geofence, warm (same network, same route)",
        "lean": "+ geofence, warm, private_cache = false",
        "audit": "+ geofence, warm, audit trail on",
        "miss": "+ geofence, cache miss (new network each time)",
    }
    for key, label in labels.items():
        print(f"  {label:<44} {rows[key]:>9.2f}   {rows[key] - base:>+10.2f}   {rows[key] / base:>6.2f}x")
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("\ninstructions: skipped (valgrind not found)")
        else:
            counts = instructions()
            print("\ninstructions per request (callgrind; repeatable)   instructions   added vs bare   ratio")
            for key, label in labels.items():
                added = counts[key] - counts["bare"]
                print(f"  {label:<44} {counts[key]:>12,.0f}   {added:>+13,.0f}   {counts[key] / counts['bare']:>5.2f}x")
            ns = rows["bare"] * 1000 / counts["bare"]
            warm_us = (counts["warm"] - counts["bare"]) * ns / 1000
            miss_us = (counts["miss"] - counts["bare"]) * ns / 1000
            print(
                f"  (at this run's bare-app speed, {ns:.3f} ns per instruction: geofence warm adds ~{warm_us:.2f} µs,"
            )
            print(f"   a miss ~{miss_us:.2f} µs)")
    if args.no_e2e:
        return 0
    if shutil.which("wrk") is None:
        print("\nend to end: skipped (wrk not found; on Debian/Ubuntu: apt-get install wrk)")
        return 0
    e2e = end_to_end(args.seconds, max(3, args.rounds // 2))
    low, high = e2e["range"]
    print(f"\nend to end (uvicorn, 1 worker; wrk -t1 -c32 -d{args.seconds}s, X-Forwarded-For: 8.8.8.8)")
    print(f"  bare       {e2e['bare']:>10,.0f} requests/s (median)")
    print(f"  protected  {e2e['protected']:>10,.0f} requests/s (median)")
    print(f"  protected / bare, median of back-to-back pairs: {e2e['ratio']:.3f}x (pairs ranged {low:.3f}-{high:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
