"""CPU instructions per request, counted with valgrind's callgrind: repeatable where wall clock is not.

Every variant of benchmarks/inprocess.py runs N and then 2N requests; (count at 2N - count at N) / N is its
cost per request, so start-up, imports and set-up cancel out. PYTHONHASHSEED=0 keeps dict layouts the same.

Fast path (one subprocess per framework): each timed batch runs inside ``sys.call_tracing``, and callgrind
is told ``--zero-before=sys_call_tracing --dump-after=sys_call_tracing``, so every batch gets its own dump
with its own total. Where the interpreter's symbols are stripped (no dumps appear), it falls back to one
subprocess per variant and count under ``--callgrind-out-file=/dev/null``, reading the ``Collected`` total.
Variants with a background thread (the audit writer, whose work would spill into the next batch's dump)
always take that whole-process route, so their thread's work is counted. All subprocesses start at once.

    python benchmarks/callgrind.py starlette [--n 400] [--keys bare,warm]     # print the counts as JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOL = "sys_call_tracing"
THREADED = frozenset({"audit"})  # variants whose work continues in a background thread


def available() -> bool:
    return shutil.which("valgrind") is not None


def _command(framework: str, keys: Sequence[str], n: int, which: str) -> list[str]:
    from benchmarks.inprocess import split

    name = split(framework)[0]
    return [sys.executable, __file__, "--worker", name, "--keys", ",".join(keys), "--n", str(n), "--run", which]


def _env(framework: str) -> dict[str, str]:
    """The worker's environment: fixed hash seed, this checkout first, and the request path *framework* names
    (``starlette@reference``: the pure-Python reference)."""
    from benchmarks.inprocess import split

    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": root, **split(framework)[1]}


def _counts(key: str, n: int) -> tuple[int, int]:
    from benchmarks.inprocess import SHARE

    first = max(20, int(n * SHARE.get(key, 1.0)))
    return first, 2 * first


def _start_fast(framework: str, keys: Sequence[str], n: int, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", f"--zero-before={SYMBOL}",
         f"--dump-after={SYMBOL}", *_command(framework, keys, n, "both")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(framework),
    )  # fmt: skip


def _dump_totals(folder: Path) -> list[int]:
    dumps = sorted(
        (p for p in folder.iterdir() if re.fullmatch(r"cg\.\d+\.\d+", p.name)), key=lambda p: int(p.suffix[1:])
    )
    totals = []
    for dump in dumps:
        match = re.search(r"^summary:\s*(\d+)", dump.read_text(errors="replace"), re.MULTILINE)
        if match is None:
            return []
        totals.append(int(match.group(1)))
    return totals


def _start_whole(framework: str, key: str, n: int, which: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *_command(framework, [key], n, which)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(framework),
    )  # fmt: skip


def _collected(process: subprocess.Popen[str], what: str) -> int:
    _, stderr = process.communicate()
    match = re.search(r"Collected : (\d+)", stderr)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"callgrind {what}: {stderr[-2000:]}")
    return int(match.group(1))


def _whole(framework: str, key: str, n: int) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """One variant in two subprocesses (N, 2N requests): whole-process totals include background threads."""
    first, second = (_start_whole(framework, key, n, which) for which in ("first", "second"))
    return first, second


def _per_request(pair: tuple[subprocess.Popen[str], subprocess.Popen[str]], key: str, n: int) -> float:
    first, second = (_collected(p, key) for p in pair)
    return (second - first) / _counts(key, n)[0]


def count(plan: dict[str, tuple[Sequence[str], int]]) -> dict[str, dict[str, Any]]:
    """Instructions per request for {framework: (keys, n)}, every subprocess started at once.

    Variants with a background thread (the audit writer) run in subprocesses of their own: their thread's work
    would spill from one batch's dump into the next, while a whole process's total includes all of it.
    """
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="geofence-callgrind-") as tmp:
        running = {}
        for fw, (keys, n) in plan.items():
            folder = Path(tmp) / fw
            folder.mkdir()
            batched = [k for k in keys if k not in THREADED]
            whole = {k: _whole(fw, k, n) for k in keys if k in THREADED}
            running[fw] = (_start_fast(fw, batched, n, folder), folder, batched, whole)
        for fw, (process, folder, batched, whole) in running.items():
            keys, n = plan[fw]
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"callgrind {fw}: {stderr[-2000:]}")
            totals = _dump_totals(folder)
            method = f"N={n} and 2N requests, one dump per batch"
            if len(totals) == 2 * len(batched):
                per = {k: (totals[2 * i + 1] - totals[2 * i]) / _counts(k, n)[0] for i, k in enumerate(batched)}
            else:  # symbols stripped: one process per variant and count, totals include the same set-up
                per = {k: _per_request(_whole(fw, k, n), k, n) for k in batched}
                method = f"N={n} and 2N requests in separate subprocesses"
            per.update({k: _per_request(pair, k, n) for k, pair in whole.items()})
            out[fw] = {"variants": {k: per[k] for k in keys}, "n": n, "method": method}
    return out


def with_speed(counts: dict[str, dict[str, Any]], wall: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Add ns per instruction at each framework's measured bare-app speed (to turn instructions into ≈ µs)."""
    for fw, result in counts.items():
        bare_us = wall.get(fw, {}).get("variants", {}).get("bare", {}).get("us")
        bare_instr = result["variants"].get("bare")
        result["ns_per_instruction"] = bare_us * 1000 / bare_instr if bare_us and bare_instr else 0.0
    return counts


def _worker(framework: str, keys: Sequence[str], n: int, which: str) -> None:
    """Inside valgrind: build the variants, warm them, then time N and 2N requests inside sys.call_tracing."""
    from benchmarks.common import per_request_us
    from benchmarks.inprocess import build, warm_up

    variants = build(framework, keys)
    warm_up(variants, 50)
    batches = {k: [v.scopes(c) for c in _counts(k, n)] for k, v in variants.items()}  # same set-up for every run
    for key, v in variants.items():
        for i, scopes in enumerate(batches[key]):
            if which == "both" or (which == "first") == (i == 0):
                gc.collect()
                sys.call_tracing(per_request_us, (v.app, scopes, False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("framework", nargs="?", default="starlette", choices=("starlette", "fastapi"))
    parser.add_argument("--n", type=int, default=400, help="N: requests in the first batch (default 400)")
    parser.add_argument("--keys", help="variants, comma-separated (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=("both", "first", "second"), default="both", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from benchmarks.inprocess import variant_keys

    keys = args.keys.split(",") if args.keys else list(variant_keys(args.worker or args.framework))
    if args.worker:
        _worker(args.worker, keys, args.n, args.run)
        return 0
    if not available():
        print("valgrind not found (on Debian/Ubuntu: apt-get install valgrind)", file=sys.stderr)
        return 1
    print(json.dumps(count({args.framework: (keys, args.n)}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
