"""Rewrite the block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in README.md from results.json.

    python benchmarks/readme.py [--results benchmarks/results/results.json] [--readme README.md] [--check]

The block is a compact table of the headline numbers, the targets' verdicts and links to the charts. Only the
text between the markers changes. ``--check`` exits 1 when the block is not what the results say.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, machine_line

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CHARTS = {
    "inprocess_added.png": "added cost by variant",
    "rules_growth.png": "route rules",
    "clients_growth.png": "distinct clients",
    "citydb.png": "city-sized database",
    "e2e.png": "end to end",
}


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} µs"


def _variant_rows(results: dict[str, Any]) -> list[str]:
    wall = results.get("inprocess", {}).get("starlette", {}).get("variants", {})
    counts = results.get("instructions", {}).get("starlette", {})
    instr = counts.get("variants", {})
    rows = ["| per request (in process, ASGI call, Starlette) | µs added (wall clock) | instructions "
            "| added vs bare app | ≈ µs added |", "|---|--:|--:|--:|--:|"]  # fmt: skip
    for key, row in wall.items():
        wall_cell = f"{row['us']:.1f} µs in all" if key == "bare" else _us(row["added_us"])
        count = instr.get(key)
        added = count - instr["bare"] if count is not None and key != "bare" else None
        est = (
            added * counts["ns_per_instruction"] / 1000
            if added is not None and counts.get("ns_per_instruction")
            else None
        )
        rows.append(
            f"| {row['label']} | {wall_cell} "
            f"| {f'{count:,.0f}' if count is not None else '—'} | {f'{added:+,.0f}' if added is not None else '—'} "
            f"| {f'{est:.1f}' if est is not None else '—'} |"
        )
    return rows


def _headline_rows(results: dict[str, Any]) -> list[str]:
    rows = ["| headline | measured |", "|---|---|"]
    fastapi = results.get("inprocess", {}).get("fastapi", {}).get("variants", {})
    if fastapi:
        warm, cold = (_us(fastapi.get(k, {}).get("added_us")) for k in ("warm", "cold"))
        ours = f"geofence {warm} warm, {cold} cold"
        if "guard_warm" in fastapi:
            ours += (f"; fastapi-guard (country blocking only, same database) "
                     f"{_us(fastapi['guard_warm']['added_us'])} warm, {_us(fastapi['guard_cold']['added_us'])} cold"
                     f" ({_us(fastapi['guard_asgi_warm']['added_us'])} with its pure-ASGI middleware)")  # fmt: skip
        rows.append(f"| FastAPI hello-world ({fastapi['bare']['us']:.0f} µs bare), added per request | {ours} |")
    reference = results.get("inprocess", {}).get("starlette@reference", {}).get("variants", {})
    if reference:
        counts = results.get("instructions", {})
        native_cg = counts.get("starlette", {}).get("variants", {})
        ref_cg = counts.get("starlette@reference", {}).get("variants", {})
        parts = []
        for key, label in (("warm", "warm"), ("cold", "cold"), ("id_warm", "identity warm")):
            if key not in reference:
                continue
            part = f"{_us(reference[key]['added_us'])} {label}"
            if key in native_cg and key in ref_cg:
                ratio = (ref_cg[key] - ref_cg["bare"]) / max(native_cg[key] - native_cg["bare"], 1)
                part += f" ({ratio:.1f}x the native path's instructions)"
            parts.append(part)
        rows.append(f"| the pure-Python reference path (`GEOFENCE_NATIVE=0`), same run | {'; '.join(parts)} |")
    clients = results.get("clients", {})
    if "100000" in clients:
        c = clients["100000"]
        rows.append(f"| 100,000 distinct clients (in process) | {_us(c['added_mean_us'])} mean added; p99.9 "
                    f"{c['geofence']['p99.9']:,.0f} µs, slowest {c['geofence']['max'] / 1000:.1f} ms |")  # fmt: skip
    if "1000000" in clients:
        c = clients["1000000"]
        rows.append(f"| 1,000,000 distinct clients (in process) | {_us(c['added_mean_us'])} mean added; RSS grew "
                    f"{c['rss_growth_kib'] / 1024:,.0f} MiB |")  # fmt: skip
    rules = results.get("rules")
    if rules and rules.get("growth_new") is not None:
        last = list(rules["new"])[-1]
        rows.append(f"| {int(last):,} route rules, a new path every request | {rules['growth_new']:.2f}x the cost "
                    f"with 1 rule ({_us(rules['new'][last]['added_us'])}) |")  # fmt: skip
    city = results.get("citydb")
    if city:
        rows.append(f"| city-sized database ({city['networks']:,} networks), cold lookup | "
                    f"{city['locator_ratio']:.2f}x a bare `reader.get()` ({city['locator_ns'] / 1000:.1f} vs "
                    f"{city['get_ns'] / 1000:.1f} µs) |")  # fmt: skip
    for size, pool in results.get("e2e", {}).get("pools", {}).items():
        rows.append(f"| end to end, uvicorn + wrk, {int(size):,} clients | {pool['throughput_ratio']:.2f}x bare "
                    f"throughput ({pool['geofence']['rps']:,.0f} vs {pool['bare']['rps']:,.0f} requests/s); "
                    f"p99 {pool['p99_ratio']:.2f}x bare |")  # fmt: skip
    return rows


def block(results: dict[str, Any], charts_dir: Path = RESULTS) -> str:
    verdicts = results.get("targets", [])
    tally = {s: sum(1 for t in verdicts if t["status"] == s) for s in ("PASS", "FAIL", "n/a")}
    failing = [t["target"] for t in verdicts if t["status"] == "FAIL"]
    rel = charts_dir.relative_to(ROOT) if charts_dir.is_relative_to(ROOT) else charts_dir
    charts = [f"[{label}]({rel}/{name})" for name, label in CHARTS.items() if (charts_dir / name).exists()]
    lines = [
        BEGIN,
        "<!-- generated by benchmarks/readme.py from benchmarks/results/results.json: edit those, not this -->",
        "",
        *_variant_rows(results),
        "",
        *_headline_rows(results),
        "",
        f"Measured {results['finished'][:10]} by `make bench`{' (quick run)' if results.get('quick') else ''} on "
        f"{machine_line(results['machine'])}; geofence {results['machine']['geofence_commit']}. Medians of "
        "interleaved rounds, each against a bare app in the same run; ≈ µs added converts instructions at that "
        "run's bare-app speed. Targets (`benchmarks/targets.py`): "
        f"{tally['PASS']} pass, {tally['FAIL']} fail, {tally['n/a']} n/a"
        + (f" (failing: {'; '.join(failing)})" if failing else "")
        + f". All tables: [{rel}/summary.md]({rel}/summary.md); method: [benchmarks/README.md](benchmarks/README.md)."
        + (f" Charts: {' · '.join(charts)}." if charts else ""),
        END,
    ]
    return "\n".join(lines)


def update(readme: Path, results: dict[str, Any], check: bool = False) -> int:
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        print(f"{readme}: no {BEGIN} ... {END} block; nothing rewritten", file=sys.stderr)
        return 1
    new = text[:start] + block(results) + text[end + len(END) :]
    if check:
        return 0 if new == text else 1
    if new != text:
        readme.write_text(new)
        print(f"rewrote the benchmark block in {readme}")
    else:
        print(f"{readme}: benchmark block already up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS / "results.json")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the block is out of date, change nothing")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"{args.results} does not exist: run `make bench` (or benchmarks/suite.py) first", file=sys.stderr)
        return 1
    return update(args.readme, json.loads(args.results.read_text()), args.check)


if __name__ == "__main__":
    raise SystemExit(main())
