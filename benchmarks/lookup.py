"""Lookups per second on the bundled database: geofence's Locator against the bare maxminddb reader.

    python benchmarks/lookup.py [--n 50000] [--rounds 5] [--db PATH ...]

Addresses are random public IPv4 addresses and random IPv6 addresses inside the RIRs' /12 blocks, kept only
when the first database has a record for them, one per database network. In the same run it times:
  * ``maxminddb``: ``Reader.get_with_prefix_len`` alone, the floor any GeoIP lookup pays;
  * ``geofence miss``: a fresh Locator's first pass, every lookup a miss (parse, classify, read, merge, cache);
  * ``geofence hit``: a second pass over the same addresses, every lookup a hit (parse, probe the cache).
Each figure is the median over ``--rounds`` rounds; the ratio column is against ``maxminddb`` in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fresh_networks
from geofence import Locator
from geofence.geoip.databases import default_database_path
from geofence.geoip.locator import DEFAULT_CACHE_SIZE

RIR_BLOCKS = (0x240, 0x260, 0x280, 0x2A0, 0x2C0)  # 2400::/12 APNIC, 2600::/12 ARIN, 2800::/12 LACNIC, ...


def random_public(rng: random.Random, version: int, n: int, reader: Any) -> list[str]:
    """*n* public addresses the database knows, each in a different database network."""
    if version == 4:
        return list(itertools.islice(fresh_networks(rng, reader), n))
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < n:  # the RIRs' blocks hold only global unicast space
        value = (rng.choice(RIR_BLOCKS) << 116) | rng.getrandbits(116)
        text = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
        record, prefix = reader.get_with_prefix_len(text)
        network = (prefix, value >> (128 - prefix))
        if record and network not in seen:
            seen.add(network)
            out.append(text)
    return out


def per_call_ns(fn: Callable[[str], object], ips: Sequence[str]) -> float:
    start = time.perf_counter_ns()
    for ip in ips:
        fn(ip)
    return (time.perf_counter_ns() - start) / len(ips)


def run(paths: list[str], n: int, rounds: int) -> list[tuple[str, str, float, float]]:
    rows = []
    reader = maxminddb.open_database(paths[0], maxminddb.MODE_MMAP_EXT)
    for version in (4, 6):
        ips = random_public(random.Random(version), version, n, reader)
        raw, miss, hit = [], [], []
        for _ in range(rounds):
            raw.append(per_call_ns(reader.get_with_prefix_len, ips))
            locator = Locator(paths, cache_size=max(n, DEFAULT_CACHE_SIZE))
            miss.append(per_call_ns(locator.lookup, ips))
            assert locator.cached_networks == len(ips), "every first-pass lookup should have missed"
            hit.append(per_call_ns(locator.lookup, ips))
            locator.close()
        base = statistics.median(raw)
        family = f"IPv{version}"
        rows.append((family, "maxminddb get_with_prefix_len", base, 1.0))
        rows.append((family, "geofence lookup, cache miss", statistics.median(miss), statistics.median(miss) / base))
        rows.append((family, "geofence lookup, cache hit", statistics.median(hit), statistics.median(hit) / base))
    reader.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="addresses per family (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--db", action="append", help="database(s) instead of the bundled one")
    args = parser.parse_args(argv)
    paths = args.db or [str(default_database_path())]
    rows = run(paths, args.n, args.rounds)
    print(f"databases: {', '.join(paths)}")
    print(f"python {sys.version.split()[0]}, {args.n} addresses per family, median of {args.rounds} rounds\n")
    print(f"{'family':<7} {'what':<32} {'ns/lookup':>10} {'lookups/s':>12} {'vs maxminddb':>13}")
    for family, what, ns, ratio in rows:
        print(f"{family:<7} {what:<32} {ns:>10.0f} {1e9 / ns:>12,.0f} {ratio:>12.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
