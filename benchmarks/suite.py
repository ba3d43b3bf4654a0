"""geofence's benchmark suite: one command, tables on stdout, results.json, summary.md and charts.

    make bench                         # installs the bench extra, runs this, rewrites README.md's bench block
    make bench QUICK=1                 # the quick run (≈ 1.5 min), README.md left alone
    python benchmarks/suite.py [--quick] [--only SECTIONS] [--instructions | --no-instructions] [--no-e2e]

Sections (all by default, in this order): inprocess (Starlette and FastAPI, with fastapi-guard beside
geofence; callgrind instruction counts when valgrind exists), rules, clients, citydb, e2e (needs wrk).
``--only inprocess --instructions`` is the quick loop while optimising the request path. A run with --only
writes to benchmarks/.cache/partial/ (or --out), merging its sections into the results.json there, so it
never replaces the full run's results. Every ratio is against a bare app measured in the same run; see
benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import callgrind, citydb, e2e, growth, inprocess, peer, report, targets
from benchmarks.common import CACHE, RESULTS, machine, machine_line

SECTIONS = ("inprocess", "rules", "clients", "citydb", "e2e")


@dataclass(frozen=True)
class Settings:
    n: int
    rounds: int
    growth_rounds: int  # rules and city database
    callgrind_n: dict[str, int]
    rule_sizes: tuple[int, ...]
    rule_n: int
    clients: tuple[tuple[int, int], ...]  # (distinct clients, requests)
    city_networks: int
    city_n: int
    pools: tuple[int, ...]
    seconds: int
    e2e_rounds: int


FULL = Settings(
    n=2000,
    rounds=11,
    growth_rounds=7,
    callgrind_n={"starlette": 400, "fastapi": 100},
    rule_sizes=(1, 10, 100, 1000),
    rule_n=3000,
    clients=((1, 50_000), (1_000, 20_000), (10_000, 50_000), (100_000, 300_000), (1_000_000, 1_000_000)),
    city_networks=300_000,
    city_n=5000,
    pools=(1_000, 100_000),
    seconds=3,
    e2e_rounds=3,
)
QUICK = Settings(
    n=1000,
    rounds=5,
    growth_rounds=3,
    callgrind_n={"starlette": 200, "fastapi": 60},
    rule_sizes=(1, 10, 100, 1000),
    rule_n=1000,
    clients=((1, 20_000), (1_000, 10_000), (10_000, 30_000), (100_000, 200_000)),
    city_networks=100_000,
    city_n=3000,
    pools=(1_000, 100_000),
    seconds=2,
    e2e_rounds=1,
)


def log(message: str) -> None:
    print(message, flush=True)


class Section:
    """Prints the section's title and records how long it took."""

    def __init__(self, name: str, title: str, timings: dict[str, float]) -> None:
        self.name, self.title, self.timings = name, title, timings

    def __enter__(self) -> None:
        log(f"\n== {self.title} ==")
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = time.monotonic() - self.start


def run(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if args.no_e2e:
        only.discard("e2e")
    results: dict[str, Any] = {"skipped": {}}
    timings: dict[str, float] = {}
    show = report.tables
    if "inprocess" in only:
        with Section("inprocess", "in process", timings):
            frameworks = ("starlette", "fastapi")
            if peer.available() is None:
                results["skipped"]["inprocess: fastapi-guard"] = "not installed (pip install -e '.[bench]')"
            # the pure-Python reference path beside the native one, in a process of its own (see inprocess.py)
            reference = "starlette" + inprocess.REFERENCE
            results["inprocess"] = inprocess.run((*frameworks, reference), args.n or s.n, args.rounds or s.rounds)
            counts = args.instructions if args.instructions is not None else not args.quick
            if counts and callgrind.available():
                log("  counting instructions with callgrind (Starlette, FastAPI, the reference path side by side) ...")
                # the audit variant needs two whole-process runs of its own (its writer thread): the
                # optimisation loop (--only inprocess) counts it, the full suite saves the time
                skip = () if args.only else callgrind.THREADED
                plan = {fw: ([k for k in inprocess.variant_keys(fw) if k not in skip], s.callgrind_n[fw])
                        for fw in frameworks}  # fmt: skip
                plan[reference] = (list(inprocess.REFERENCE_KEYS), s.callgrind_n["starlette"])
                if skip:
                    results["skipped"]["inprocess: audit instructions"] = "counted only with --only inprocess"
                results["instructions"] = callgrind.with_speed(callgrind.count(plan), results["inprocess"])
            elif counts:
                results["skipped"]["inprocess: instructions"] = "valgrind not found (apt-get install valgrind)"
            else:
                results["skipped"]["inprocess: instructions"] = "not requested (--instructions to count them)"
            for table in show({"inprocess": results["inprocess"], "instructions": results.get("instructions")}):
                log(table.text() + "\n")
    if "rules" in only:
        with Section("rules", "route rules", timings):
            results["rules"] = growth.rules(s.rule_sizes, s.rule_n, s.growth_rounds)
            log(growth.rules_table(results["rules"]).text())
    if "clients" in only:
        with Section("clients", "distinct clients", timings):
            if args.quick:
                results["skipped"]["clients: 1M clients"] = "skipped by --quick (the RSS target needs the full run)"
            results["clients"] = growth.clients(s.clients, log)
            log(growth.clients_table(results["clients"]).text())
    if "citydb" in only:
        with Section("citydb", "city-sized database", timings):
            results["citydb"] = citydb.measure(s.city_networks, s.city_n, s.growth_rounds, log)
            log(citydb.table(results["citydb"]).text())
    if "e2e" in only:
        with Section("e2e", "end to end", timings):
            if e2e.available():
                results["e2e"] = e2e.measure(s.pools, args.seconds or s.seconds, s.e2e_rounds, log)
                log(e2e.table(results["e2e"]).text())
            else:
                message = "wrk not found: install it (Debian/Ubuntu: apt-get install wrk) to measure end to end"
                results["skipped"]["e2e: wrk"] = message
                log(f"  skipped: {message}")
    results["section_seconds"] = timings
    return results


def merge(new: dict[str, Any], path: Path, partial: bool) -> dict[str, Any]:
    """A partial run (--only) updates its sections of the saved results and keeps the others."""
    if not partial or not path.exists():
        return new
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return new
    merged = {**old, **{k: v for k, v in new.items() if k not in ("skipped", "section_seconds")}}
    ran = tuple(f"{name}:" for name in new["section_seconds"])
    kept = {k: v for k, v in old.get("skipped", {}).items() if not k.startswith(ran)}
    merged["skipped"] = {**kept, **new["skipped"]}
    merged["section_seconds"] = {**old.get("section_seconds", {}), **new["section_seconds"]}
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds, no 1M clients (≈ 1.5 min)")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument(
        "--instructions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count instructions with callgrind (default: yes in the full run, when valgrind exists)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn + wrk section")
    parser.add_argument("--n", type=int, help="requests per in-process round")
    parser.add_argument("--rounds", type=int, help="in-process rounds")
    parser.add_argument("--seconds", type=int, help="wrk seconds per end-to-end run")
    parser.add_argument(
        "--out",
        type=Path,
        help="where results go (default benchmarks/results; with --only, benchmarks/.cache/partial, merged into the "
        "results.json already there)",
    )
    args = parser.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    if args.out is None:  # a partial run never overwrites the full run's results (and so README.md's block)
        args.out = CACHE / "partial" if args.only else RESULTS
    started = time.monotonic()
    m = machine()
    log(f"geofence benchmark suite ({'quick' if args.quick else 'full'} run)")
    log(f"machine: {machine_line(m)}")
    log(f"geofence {m['geofence_commit']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    if not m["maxminddb_c_extension"]:
        log("WARNING: maxminddb's C extension is missing: every lookup figure is 20-50x off")
    results = run(args, QUICK if args.quick else FULL)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = merge(results, path, partial=bool(args.only))
    results.update(machine=m, quick=args.quick, finished=datetime.now(UTC).isoformat(timespec="seconds"))
    results["duration_s"] = time.monotonic() - started
    results["targets"] = targets.evaluate(results)
    log("")
    report.print_targets(results)
    for line in report.skipped(results):
        log(f"  not measured: {line}")
    from benchmarks import charts

    drawn = charts.draw(results, args.out)
    path.write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "summary.md").write_text(report.summary(results, drawn))
    log(f"\nwrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}, summary.md and "
        f"{len(drawn)} charts ({', '.join(p.name for p in drawn)}) in {args.out}")  # fmt: skip
    log(f"total time: {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
