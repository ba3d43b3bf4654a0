"""Growth curves: how geofence's per-request cost moves with the number of route rules and of clients.

Rules: policies with 1, 10, 100, 1,000 route rules (``/v1/models/model-0042/**``, ``/api/team-17/*/export/**``,
alternating); requests hit the last model rule of the table, on a path never seen before (each request
``/v1/models/model-NNNN/x/<counter>``) or on one path again and again. µs/request in process, against the bare
Starlette app on the same paths, interleaved rounds, medians.

Clients: 1k, 10k, 100k, 1M distinct random public IPv4 clients, sent as X-Forwarded-For from the trusted
peer 127.0.0.1, in random order, each client seen several times (1M: once each). Every request is timed on
its own (the garbage collector stays on: its passes are part of the tail); the bare app is timed on a 20%
sample of the same requests, interleaved in chunks. Each size runs in a fresh subprocess, which reports its
resident set size (VmRSS) before the first request and after the last.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import apps
from benchmarks.common import (
    Scope,
    Table,
    interleaved,
    median,
    per_request_us,
    public_ipv4,
    receive,
    rss_kib,
    scope,
    send,
    signed,
    status_of,
    tail,
    time_ns,
    times,
    us,
)

CLIENT = "8.8.8.8"
CHUNK = 10_000
BARE_SHARE = 5  # the bare app times every 5th chunk-slice: a 20% sample


# --- route rules ---------------------------------------------------------------------------------------------


def rules(sizes: Sequence[int], n: int, rounds: int) -> dict[str, Any]:
    counter = itertools.count()
    targets = {size: f"/v1/models/model-{max(i for i in range(size) if i % 2 == 0):04d}/x" for size in sizes}
    bare = apps.make_bare()
    protected = {
        size: apps.protect(apps.make_bare(), apps.example_policy(routes=apps.rule_routes(size))) for size in sizes
    }

    def new_paths(size: int) -> list[Scope]:
        return [scope(CLIENT, f"{targets[size]}/{next(counter)}") for _ in range(n)]

    runs = {"bare": lambda: per_request_us(bare, new_paths(sizes[-1]))}
    for size, app in protected.items():
        if status_of(app, new_paths(size)[0]) != 200:
            raise RuntimeError(f"rules: {targets[size]}/... was not allowed with {size} rules")
        per_request_us(app, new_paths(size)[:500])
        repeated = [scope(CLIENT, f"{targets[size]}/again")] * n
        runs[f"new:{size}"] = partial(lambda a, sz: per_request_us(a, new_paths(sz)), app, size)
        runs[f"repeated:{size}"] = partial(per_request_us, app, repeated)
    samples = interleaved(rounds, runs)
    base = median(samples["bare"])
    out: dict[str, Any] = {"n": n, "rounds": rounds, "bare_us": base, "new": {}, "repeated": {}}
    for kind in ("new", "repeated"):
        for size in sizes:
            value = median(samples[f"{kind}:{size}"])
            out[kind][str(size)] = {"us": value, "added_us": value - base}
    first, last = out["new"][str(sizes[0])]["added_us"], out["new"][str(sizes[-1])]["added_us"]
    out["growth_new"] = last / first if first > 0 else None
    return out


def rules_table(result: dict[str, Any]) -> Table:
    rows = []
    first = result["new"][next(iter(result["new"]))]["added_us"]
    for size in result["new"]:
        new, repeated = result["new"][size], result["repeated"][size]
        growth = new["added_us"] / first if first > 0 else None
        rows.append([f"{int(size):,}", us(new["us"]), signed(new["added_us"]), times(growth),
                     us(repeated["us"]), signed(repeated["added_us"])])  # fmt: skip
    return Table(
        "Route rules (in process, Starlette; a new path every request vs the same path)",
        ["rules", "new path µs", "added µs", "vs 1 rule", "same path µs", "added µs"],
        rows,
        [f"bare app on the same paths: {result['bare_us']:.2f} µs; median of {result['rounds']} interleaved rounds "
         f"of {result['n']:,} requests; requests match the table's last model rule"],
    )  # fmt: skip


# --- distinct clients ----------------------------------------------------------------------------------------


def cache_budget(middleware: Any) -> int | None:
    """The middleware's total cache budget in bytes, if it exposes one (``cache_budget_bytes``)."""
    for name in ("cache_budget_bytes", "cache_budget"):
        value = getattr(middleware, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _clients_worker(clients: int, requests: int, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    ips = [ip.encode() for ip in public_ipv4(rng, clients)]
    visits = max(1, round(requests / clients))
    order = list(range(clients)) * visits
    rng.shuffle(order)
    bare, app = apps.make_bare(), apps.protect(apps.make_bare())
    statuses: Counter[int] = Counter()

    async def count(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    def forwarded(i: int) -> Scope:
        return scope("127.0.0.1", "/v1/models", [(b"x-forwarded-for", ips[i])])

    async def timed(target: Any, indices: Sequence[int], out: array[int], at: list[int], reply: Any) -> None:
        k = at[0]
        for i in indices:
            s = forwarded(i)
            start = time_ns()
            await target(s, receive, reply)
            out[k] = time_ns() - start
            k += 1
        at[0] = k

    warm = [scope("127.0.0.1", "/v1/models", [(b"x-forwarded-for", CLIENT.encode())])] * 500
    per_request_us(app, warm)
    per_request_us(bare, warm)
    # The timings go to arrays allocated (and touched) before the first RSS reading: RSS growth is the caches'.
    chunks = [order[start : start + CHUNK] for start in range(0, len(order), CHUNK)]
    geo_ns = array("q", bytes(8 * len(order)))
    bare_ns = array("q", bytes(8 * sum(len(c) // BARE_SHARE or 1 for c in chunks)))
    geo_at, bare_at = [0], [0]
    before = rss_kib()

    async def run() -> None:
        for chunk in chunks:
            await timed(bare, chunk[: len(chunk) // BARE_SHARE or 1], bare_ns, bare_at, send)
            await timed(app, chunk, geo_ns, geo_at, count)

    asyncio.run(run())
    after = rss_kib()
    geo, base = tail(geo_ns), tail(bare_ns)
    return {
        "clients": clients, "requests": len(order), "visits": visits, "geofence": geo, "bare": base,
        "added_mean_us": geo["mean"] - base["mean"], "over_20ms": sum(1 for t in geo_ns if t > 20_000_000),
        "rss_before_kib": before, "rss_after_kib": after, "rss_growth_kib": after - before,
        "cache_budget_bytes": cache_budget(app), "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }  # fmt: skip


def clients(plan: Sequence[tuple[int, int]], log: Any = None) -> dict[str, Any]:
    """{clients: (requests)} sizes, each in a fresh subprocess (so RSS is this size's alone)."""
    out = {}
    for count, requests in plan:
        result = subprocess.run(
            [sys.executable, __file__, "--clients-worker", str(count), str(requests)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"clients worker {count}: {result.stderr[-3000:]}")
        out[str(count)] = json.loads(result.stdout.strip().splitlines()[-1])
        if log:
            log(f"  {count:>9,} clients: {out[str(count)]['requests']:,} requests done")
    return out


def clients_table(result: dict[str, Any]) -> Table:
    rows = []
    for size, r in result.items():
        g = r["geofence"]
        rows.append([f"{int(size):,}", f"{r['requests']:,} ({r['visits']}x)", us(r["bare"]["mean"]), us(g["mean"]),
                     signed(r["added_mean_us"]), us(g["p50"]), us(g["p99"]), us(g["p99.9"]), us(g["max"], 0),
                     f"{r['rss_after_kib'] / 1024:,.0f}", f"{r['rss_growth_kib'] / 1024:+,.1f}"])  # fmt: skip
    answers = "; ".join(
        f"{int(size):,} clients " + ", ".join(f"{n:,}x {code}" for code, n in r["statuses"].items())
        for size, r in result.items()
    )
    return Table(
        "Distinct clients (in process, Starlette; X-Forwarded-For from a trusted proxy; per-request µs)",
        ["clients", "requests", "bare mean", "mean", "added", "p50", "p99", "p99.9", "max", "RSS MiB", "RSS growth"],
        rows,
        ["mean/p50/p99/p99.9/max: geofence, every request timed (GC on); bare: a 20% sample of the same requests",
         "RSS growth: VmRSS after the last request minus before the first, in a fresh process per size",
         f"answers: {answers} (451: clients in embargoed countries)",
         *(["request counts are scaled to keep the run within minutes: the largest sizes see each client only "
            f"{min(r['visits'] for r in result.values())}x"] if min(r["visits"] for r in result.values()) < 3 else [])],
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--clients-worker":
        print(json.dumps(_clients_worker(int(sys.argv[2]), int(sys.argv[3]))))
        raise SystemExit(0)
    from benchmarks.suite import main

    raise SystemExit(main(["--only", "rules,clients", *sys.argv[1:]]))
