"""In-process added cost: the ASGI call itself (no server, no network), geofence against reference middlewares.

On a Starlette and on a FastAPI hello-world, in the same run, interleaved rounds, medians reported:
  * ``bare``: the app alone;  ``noop``: behind a no-op pure-ASGI middleware (the floor for any middleware);
  * ``floor``: behind :class:`benchmarks.apps.DataFloor` (find the client, one ``reader.get``; the least any
    GeoIP middleware must do), every request from a new database network;
  * ``warm``: geofence, same client, same route (the common case); Starlette also runs it with
    ``private_cache = false`` (``lean``) and with the audit trail on (``audit``);
  * ``cold``: geofence, every request from a new database network (random public IPv4 addresses, each in a
    network not seen before);
  * ``id_warm``: geofence on a route whose class needs a verified identity (``4E091``, ``persons = "us_only"``),
    the same valid token every request;  ``id_cold``: a new valid token every request (signature verified);
  * FastAPI only: fastapi-guard doing country blocking only (see benchmarks/peer.py), warm and cold, with its
    documented ``SecurityMiddleware`` and with its ``PureASGISecurityMiddleware``.
Callgrind instruction counts for the same variants are in benchmarks/callgrind.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import maxminddb

from benchmarks import apps, peer
from benchmarks.common import (
    Scope,
    Table,
    audit_settler,
    fresh_networks,
    interleaved,
    median,
    per_request_us,
    scope,
    signed,
    status_of,
    times,
    us,
)
from geofence.geoip.databases import default_database_path

LABELS = {
    "bare": "bare hello-world",
    "noop": "+ no-op pure-ASGI middleware",
    "floor": "+ data floor (client + one reader.get), cold",
    "warm": "+ geofence, warm (same client, same route)",
    "lean": "+ geofence, warm, private_cache = false",
    "audit": "+ geofence, warm, audit trail on",
    "cold": "+ geofence, cold (new network every request)",
    "id_warm": "+ geofence, identity class, same token",
    "id_cold": "+ geofence, identity class, new token each",
    "guard_warm": "+ fastapi-guard (BaseHTTPMiddleware), warm",
    "guard_cold": "+ fastapi-guard (BaseHTTPMiddleware), cold",
    "guard_asgi_warm": "+ fastapi-guard (pure ASGI), warm",
    "guard_asgi_cold": "+ fastapi-guard (pure ASGI), cold",
}
OURS = ("bare", "noop", "floor", "warm", "cold", "id_warm", "id_cold")
PEERS = ("guard_warm", "guard_cold", "guard_asgi_warm", "guard_asgi_cold")
SHARE = {"id_cold": 0.1, **dict.fromkeys(PEERS, 0.25)}  # slow variants run this share of the requests
WARM_CLIENT = "8.8.8.8"


@dataclass
class Variant:
    key: str
    app: Any
    scopes: Callable[[int], list[Scope]]
    """*n* scopes for one round; cold variants return addresses or tokens never used before."""
    expect: int = 200
    settle: Callable[[int], None] | None = None
    """Waits, inside the timing, for the background work a batch left (see common.per_request_us)."""

    @property
    def share(self) -> float:
        return SHARE.get(self.key, 1.0)


STARLETTE_ONLY = ("lean", "audit")  # for the optimisation loop: what marking responses and the audit trail cost


def variant_keys(framework: str) -> tuple[str, ...]:
    if framework == "starlette":
        return (*OURS[:4], *STARLETTE_ONLY, *OURS[4:])
    return OURS + (PEERS if framework == "fastapi" and peer.available() else ())


def build(framework: str, keys: Sequence[str], seed: int = 7) -> dict[str, Variant]:
    """The variants *keys* on *framework*, each with its own app instance (no variant warms another's caches)."""
    factory = apps.FRAMEWORKS[framework]
    reader = maxminddb.open_database(str(default_database_path()), maxminddb.MODE_MMAP_EXT)

    def warm(n: int) -> list[Scope]:
        return [scope(WARM_CLIENT)] * n

    def cold(offset: int) -> Callable[[int], list[Scope]]:
        addresses = fresh_networks(random.Random(seed + offset), reader)
        return lambda n: [scope(next(addresses)) for _ in range(n)]

    tokens = apps.us_person_tokens(f"bench-{framework}")
    same_token = [apps.bearer(next(tokens))]

    def id_warm(n: int) -> list[Scope]:
        return [scope(WARM_CLIENT, apps.IDENTITY_PATH, same_token)] * n

    def id_cold(n: int) -> list[Scope]:
        return [scope(WARM_CLIENT, apps.IDENTITY_PATH, [apps.bearer(next(tokens))]) for _ in range(n)]

    def audited(app: Any, scopes: Callable[[int], list[Scope]]) -> Variant:
        return Variant("audit", app, scopes, settle=audit_settler(app))

    makers: dict[str, Callable[[], Variant]] = {
        "bare": lambda: Variant("bare", factory(), warm),
        "noop": lambda: Variant("noop", apps.Noop(factory()), warm),
        "floor": lambda: Variant("floor", apps.DataFloor(factory()), cold(1)),
        "warm": lambda: Variant("warm", apps.protect(factory()), warm),
        "lean": lambda: Variant("lean", apps.protect(factory(), apps.example_policy(private_cache=False)), warm),
        "audit": lambda: audited(apps.protect(factory(), apps.example_policy(audit=apps.audit_file())), warm),
        "cold": lambda: Variant("cold", apps.protect(factory()), cold(2)),
        "id_warm": lambda: Variant("id_warm", apps.protect(factory()), id_warm),
        "id_cold": lambda: Variant("id_cold", apps.protect(factory()), id_cold),
        "guard_warm": lambda: Variant("guard_warm", peer.guarded(factory(), "guard"), warm),
        "guard_cold": lambda: Variant("guard_cold", peer.guarded(factory(), "guard"), cold(3)),
        "guard_asgi_warm": lambda: Variant("guard_asgi_warm", peer.guarded(factory(), "guard_asgi"), warm),
        "guard_asgi_cold": lambda: Variant("guard_asgi_cold", peer.guarded(factory(), "guard_asgi"), cold(4)),
    }
    return {key: makers[key]() for key in keys}


def warm_up(variants: dict[str, Variant], n: int = 200) -> None:
    """Check each variant answers as expected (so it measures the path it claims), then warm it."""
    for v in variants.values():
        first = v.scopes(1)[0]
        got = status_of(v.app, first)
        if got != v.expect:
            raise RuntimeError(f"in-process variant {v.key}: expected {v.expect}, got {got} for {first['path']}")
        per_request_us(v.app, v.scopes(max(10, int(n * v.share))), settle=v.settle)


REFERENCE: Final = "@reference"
"""A framework name ending so (``starlette@reference``) runs in a subprocess on the pure-Python reference path
(``GEOFENCE_NATIVE=0``, read when geofence is imported): both request paths measured in one run, each against a
bare app of its own process."""
REFERENCE_KEYS: Final = ("bare", "noop", "floor", "warm", "cold", "id_warm")


def split(framework: str) -> tuple[str, dict[str, str]]:
    """(framework, the environment its process needs) for a name that may end in :data:`REFERENCE`."""
    if framework.endswith(REFERENCE):
        return framework.removesuffix(REFERENCE), {"GEOFENCE_NATIVE": "0"}
    return framework, {}


def measure(framework: str, n: int, rounds: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Wall clock: median µs/request of each variant over interleaved rounds."""
    if framework.endswith(REFERENCE):
        return _in_reference_process(framework, n, rounds)
    keys = keys or variant_keys(framework)
    variants = build(framework, keys)
    warm_up(variants)

    def run(v: Variant) -> Callable[[], float]:
        return lambda: per_request_us(v.app, v.scopes(max(20, int(n * v.share))), settle=v.settle)

    samples = interleaved(rounds, {key: run(v) for key, v in variants.items()})
    base = median(samples["bare"])
    out: dict[str, Any] = {}
    for key, values in samples.items():
        value = median(values)
        out[key] = {
            "label": LABELS[key],
            "us": value,
            "added_us": value - base,
            "ratio": value / base,
            "requests": max(20, int(n * variants[key].share)),
            "rounds_us": values,
        }
    return {"n": n, "rounds": rounds, "variants": out}


def _in_reference_process(framework: str, n: int, rounds: int) -> dict[str, Any]:
    name, env = split(framework)
    command = [sys.executable, __file__, "--reference-worker", name, str(n), str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reference-path worker: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(frameworks: Sequence[str], n: int, rounds: int) -> dict[str, Any]:
    return {fw: measure(fw, n, rounds) for fw in frameworks}


def added_vs_floor(result: dict[str, Any]) -> float | None:
    v = result["variants"]
    return v["cold"]["us"] - v["floor"]["us"] if "cold" in v and "floor" in v else None


def tables(section: dict[str, Any], counts: dict[str, Any] | None = None) -> list[Table]:
    """One table per framework; instruction columns when callgrind counts exist for it."""
    out = []
    for fw, result in section.items():
        if fw.startswith("_"):
            continue
        v = result["variants"]
        cg = (counts or {}).get(fw)
        headers = ["per request (ASGI call, no server)", "µs", "added µs", "vs bare"]
        if cg:
            headers += ["instructions", "added instr.", "≈ µs added"]
        rows = []
        for key, row in v.items():
            cells = [
                row["label"],
                us(row["us"]),
                signed(row["added_us"]) if key != "bare" else "—",
                times(row["ratio"]),
            ]
            if cg:
                instr = cg["variants"].get(key)
                added = instr - cg["variants"]["bare"] if instr is not None else None
                est = added * cg["ns_per_instruction"] / 1000 if added is not None else None
                cells += [
                    f"{instr:,.0f}" if instr is not None else "—",
                    f"{added:+,.0f}" if added is not None and key != "bare" else "—",
                    signed(est) if est is not None and key != "bare" else "—",
                ]
            rows.append(cells)
        share = f"identity cold {SHARE['id_cold']:.0%}, fastapi-guard {SHARE['guard_warm']:.0%} of that"
        notes = [f"median of {result['rounds']} interleaved rounds of {result['n']:,} requests ({share})"]
        floor = added_vs_floor(result)
        if floor is not None:
            notes.append(f"geofence cold costs {floor:+.2f} µs over the data floor (same cold addresses)")
        if cg:
            notes.append(
                f"instructions: callgrind, {cg['method']}; ≈ µs at this run's bare-app speed "
                f"({cg['ns_per_instruction']:.3f} ns per instruction)"
            )
        name, env = split(fw)
        path = "the pure-Python reference path (GEOFENCE_NATIVE=0)" if env else "the request path as installed"
        out.append(Table(f"In process, {name} hello-world, {path}", headers, rows, notes))
    comparison = paths_table(section, counts)
    return [*out, comparison] if comparison is not None else out


def paths_table(section: dict[str, Any], counts: dict[str, Any] | None = None) -> Table | None:
    """The native and the reference path side by side (Starlette): what each adds over its own bare app."""
    native, reference = section.get("starlette"), section.get("starlette" + REFERENCE)
    if native is None or reference is None:
        return None
    cg_native, cg_ref = ((counts or {}).get(k) for k in ("starlette", "starlette" + REFERENCE))
    rows = []
    for key in REFERENCE_KEYS[1:]:
        a, b = native["variants"].get(key), reference["variants"].get(key)
        if a is None or b is None:
            continue
        cells = [a["label"], signed(a["added_us"]), signed(b["added_us"])]
        if cg_native and cg_ref:
            ia = cg_native["variants"][key] - cg_native["variants"]["bare"]
            ib = cg_ref["variants"][key] - cg_ref["variants"]["bare"]
            cells += [f"{ia:+,.0f}", f"{ib:+,.0f}", times(ib / ia) if ia > 0 else "—"]
        rows.append(cells)
    headers = ["Starlette, per request", "native µs added", "reference µs added"]
    if cg_native and cg_ref:
        headers += ["native instr. added", "reference instr. added", "reference / native"]
    notes = ["each path against a bare app measured in its own process, in the same run; the reference path is "
             "the definition of every answer (tests/test_native.py holds the native path to it)"]  # fmt: skip
    return Table("The two request paths: native (C extension) and pure-Python reference", headers, rows, notes)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--reference-worker":
        from geofence.native import core

        assert core is None, "the reference worker must run without the native path (GEOFENCE_NATIVE=0)"
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), REFERENCE_KEYS)))
        raise SystemExit(0)
    from benchmarks.suite import main

    raise SystemExit(main(["--only", "inprocess", *sys.argv[1:]]))
