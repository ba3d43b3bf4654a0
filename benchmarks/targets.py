"""The performance targets, in one place: the benchmarks are the gate (the unit tests assert no timings).

Each target reads the measured value from results.json's sections and compares it with its limit. A target
whose section did not run (``--only``, ``--quick`` skipping a size, no wrk) or that the middleware gives no
way to check (no exposed cache budget) is "n/a", never a silent pass. Wall-clock targets are read from the
Starlette in-process run; the FastAPI figures are reported beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    limit: float
    unit: str  # "µs", "x", "ms", "MiB"
    higher_is_better: bool
    measure: Callable[[Results], tuple[float | None, str]]
    """The measured value (None: not measured) and what it was measured on / why it is missing."""


def _get(results: Results, *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _added(variant: str) -> Callable[[Results], tuple[float | None, str]]:
    def measure(results: Results) -> tuple[float | None, str]:
        value = _get(results, "inprocess", "starlette", "variants", variant, "added_us")
        return value, "in process, Starlette, median of interleaved rounds" if value is not None else "not run"

    return measure


def _cold_vs_floor(results: Results) -> tuple[float | None, str]:
    cold = _get(results, "inprocess", "starlette", "variants", "cold", "us")
    floor = _get(results, "inprocess", "starlette", "variants", "floor", "us")
    if cold is None or floor is None:
        return None, "not run"
    return cold - floor, "geofence cold minus the data floor, Starlette"


def _clients(field: str, scale: float = 1.0) -> Callable[[Results], tuple[float | None, str]]:
    def measure(results: Results) -> tuple[float | None, str]:
        run = _get(results, "clients", "100000")
        if run is None:
            return None, "100k-client run not done"
        value = run["added_mean_us"] if field == "added" else run["geofence"][field] * scale
        return value, f"{run['requests']:,} requests from 100k clients, in process"

    return measure


def _e2e(field: str) -> Callable[[Results], tuple[float | None, str]]:
    def measure(results: Results) -> tuple[float | None, str]:
        value = _get(results, "e2e", "pools", "100000", field)
        if value is None:
            return None, "end-to-end run not done (needs wrk)"
        return value, "uvicorn + wrk, pool of 100k clients, median of back-to-back pairs"

    return measure


def _rules(results: Results) -> tuple[float | None, str]:
    new = _get(results, "rules", "new")
    if not new or "1" not in new or "1000" not in new:
        return None, "rules run not done"
    first = new["1"]["added_us"]
    return (new["1000"]["added_us"] / first if first > 0 else None), "added µs at 1,000 rules / at 1 rule, new paths"


def _city(results: Results) -> tuple[float | None, str]:
    value = _get(results, "citydb", "locator_ratio")
    return value, "Locator cold lookup / reader.get, synthetic city database" if value is not None else "not run"


def _clients_scale(results: Results) -> tuple[float | None, str]:
    many, one = _get(results, "clients", "1000000"), _get(results, "clients", "1")
    if many is None or one is None:
        return None, "1M- and 1-client runs not both done (1M is skipped by --quick)"
    ratio = many["geofence"]["mean"] / one["geofence"]["mean"]
    return (
        ratio,
        f"mean µs per request, 1M distinct clients / 1 client ({many['geofence']['mean']:.1f} vs "
        f"{one['geofence']['mean']:.1f}), same harness",
    )


def _peer_ratio(ours: str, theirs: str) -> Callable[[Results], tuple[float | None, str]]:
    def measure(results: Results) -> tuple[float | None, str]:
        variants = _get(results, "inprocess", "fastapi", "variants") or {}
        if ours not in variants or theirs not in variants:
            return None, "fastapi-guard not measured (pip install -e '.[bench]')"
        mine, peer = variants[ours]["added_us"], variants[theirs]["added_us"]
        if mine <= 0:
            return None, f"geofence {ours} added {mine:+.2f} µs: no ratio"
        return peer / mine, f"FastAPI: fastapi-guard {theirs} {peer:+.1f} µs / geofence {ours} {mine:+.2f} µs"

    return measure


def _rss(results: Results) -> tuple[float | None, str]:
    run = _get(results, "clients", "1000000")
    if run is None:
        return None, "1M-client run not done (skipped by --quick)"
    growth = run["rss_growth_kib"] / 1024
    budget = run.get("cache_budget_bytes")
    if not budget:
        return None, f"RSS grew {growth:,.0f} MiB; the middleware exposes no cache budget (cache_budget_bytes) yet"
    return growth / (budget / 2**20), f"RSS growth {growth:,.0f} MiB / budget {budget / 2**20:,.0f} MiB"


TARGETS: tuple[Target, ...] = (
    Target("warm", "warm added (private marking on)", 1.5, "µs", False, _added("warm")),
    Target("cold_floor", "cold, above the data floor", 3.0, "µs", False, _cold_vs_floor),
    Target("clients_mean", "100k clients: mean added", 6.0, "µs", False, _clients("added")),
    Target("clients_max", "100k clients: slowest request", 20.0, "ms", False, _clients("max", 1 / 1000)),
    Target("e2e_throughput", "100k clients end to end: throughput vs bare", 0.9, "x", True, _e2e("throughput_ratio")),
    Target("e2e_p99", "100k clients end to end: p99 vs bare p99", 1.5, "x", False, _e2e("p99_ratio")),
    Target("rules", "1,000 rules, new path: cost vs 1 rule", 2.0, "x", False, _rules),
    Target("identity_warm", "identity warm added", 2.0, "µs", False, _added("id_warm")),
    Target("city", "city-sized database, cold lookup vs reader.get", 1.5, "x", False, _city),
    Target("clients_scale", "1M distinct clients vs 1 client, per request", 1.2, "x", False, _clients_scale),
    Target(
        "guard_warm",
        "fastapi-guard's overhead vs geofence's, warm",
        100.0,
        "x",
        True,
        _peer_ratio("warm", "guard_warm"),
    ),
    Target(
        "guard_cold", "fastapi-guard's overhead vs geofence's, cold", 50.0, "x", True, _peer_ratio("cold", "guard_cold")
    ),
    Target("rss", "RSS growth after 1M clients vs cache budget", 1.0, "x", False, _rss),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        value, where = t.measure(results)
        if value is None:
            status = "n/a"
        else:
            status = "PASS" if (value >= t.limit if t.higher_is_better else value <= t.limit) else "FAIL"
        out.append({
            "key": t.key, "target": t.text, "limit": t.limit, "unit": t.unit, "higher_is_better": t.higher_is_better,
            "measured": value, "of_limit": value / t.limit if value is not None else None, "status": status,
            "where": where,
        })  # fmt: skip
    return out


def line(row: dict[str, Any]) -> str:
    op = "≥" if row["higher_is_better"] else "≤"
    unit = row["unit"]
    limit = f"{row['limit']:g}{'' if unit == 'x' else ' '}{unit}"
    measured = "—" if row["measured"] is None else f"{row['measured']:.2f}{'' if unit == 'x' else ' '}{unit}"
    share = f" ({row['of_limit']:.2f} of the limit)" if row["of_limit"] is not None else ""
    return f"{row['status']:<4}  {row['target']} {op} {limit}: {measured}{share} — {row['where']}"
