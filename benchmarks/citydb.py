"""A city-sized database: per-lookup cost of a bare ``reader.get`` vs geofence's Locator vs the middleware.

The bundled country database has small flat records. Commercial city databases have deep trees and large
records, so this section synthesises a ``GeoIP2-City``-schema database with ``mmdb-writer``: IPv6 tree with the
IPv4 space at ``::/96`` (as MaxMind ships it), 300,000 networks (/20 to /28) in distinct IPv4 /20 blocks plus
10% IPv6 networks, and 12,000 distinct records in the GeoIP2-City shape (continent, country and
registered_country with ISO code and names in 8 languages, a real ISO 3166-2 subdivision, city names,
location with latitude, longitude, accuracy radius and time zone, postal code, traits). It is built once and
cached under benchmarks/.cache/ (gitignored, never committed).

Measured on random public IPv4 addresses the database knows, each in a network not used before:
  * ``reader.get(ip)``: maxminddb's C extension alone, the floor;
  * ``Locator(path).lookup(ip)``: geofence's lookup in a long-lived Locator (mmap, like the reader), every one a
    network-cache miss (parse, read, adapt, cache);
  * the middleware's cold path (Starlette, policy ``[geoip] databases = [that file]``), added over the bare app.
Interleaved rounds, medians; ratios against ``reader.get`` in the same run.
"""

from __future__ import annotations

import os
import random
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import maxminddb

from benchmarks import apps
from benchmarks.common import CACHE, Table, interleaved, is_public_v4, median, per_request_us, scope, v4_text
from benchmarks.lookup import per_call_ns
from geofence.geoip.locator import Locator

LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
RECORDS = 12_000
VERSION = 1  # bump when the generated content changes
CONTINENTS = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe", "NA": "North America",
              "OC": "Oceania", "SA": "South America"}  # fmt: skip
ZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/Berlin", "Europe/Paris",
         "Europe/London", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata", "Australia/Sydney", "America/Sao_Paulo",
         "Africa/Lagos", "Europe/Moscow", "America/Mexico_City", "Asia/Singapore")  # fmt: skip
_CYRILLIC = dict(zip("abcdefghijklmnopqrstuvwxyz", "абкдефгхийклмнопкрстуввхыз", strict=True))
_KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"


def _stable(text: str) -> int:
    return zlib.crc32(text.encode()) % 1_000_000


def _names(base: str) -> dict[str, str]:
    """One name in 8 languages, in the scripts those languages use (so the byte sizes are realistic)."""
    low = base.lower()
    seed = sum(map(ord, base))
    return {
        "de": base, "en": base, "es": base, "fr": base, "pt-BR": base,
        "ja": "".join(_KANA[(ord(c) + seed) % len(_KANA)] for c in low if c.isalpha()) or base,
        "ru": "".join(_CYRILLIC.get(c, c) for c in low).title(),
        "zh-CN": "".join(chr(0x4E00 + (ord(c) * 131 + seed) % 20000) for c in low[:4] if c.isalpha()) or base,
    }  # fmt: skip


def _records(rng: random.Random) -> list[dict[str, Any]]:
    import pycountry

    syllables = ("an", "ber", "cas", "dor", "el", "fen", "gar", "hol", "ist", "jan", "kor", "lin", "mar", "nor",
                 "or", "pol", "quin", "ros", "san", "tor", "ul", "ven", "wes", "york", "zel")  # fmt: skip
    by_country: dict[str, list[Any]] = {}
    for sub in pycountry.subdivisions:
        by_country.setdefault(sub.country_code, []).append(sub)
    countries = [c for c in pycountry.countries if c.alpha_2 in by_country]
    out = []
    for i in range(RECORDS):
        country = rng.choice(countries)
        sub = rng.choice(by_country[country.alpha_2])
        continent = rng.choice(list(CONTINENTS))
        country_part = {"geoname_id": 6_000_000 + _stable(country.alpha_2), "iso_code": country.alpha_2,
                        "names": _names(country.name)}  # fmt: skip
        city = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).title()
        out.append({
            "city": {"geoname_id": 1_000_000 + i, "names": _names(city)},
            "continent": {"code": continent, "geoname_id": 6_255_140 + len(continent),
                          "names": _names(CONTINENTS[continent])},
            "country": country_part,
            "location": {"accuracy_radius": rng.choice((5, 10, 20, 50, 100, 200, 500, 1000)),
                         "latitude": round(rng.uniform(-60, 70), 4), "longitude": round(rng.uniform(-180, 180), 4),
                         "time_zone": rng.choice(ZONES)},
            "postal": {"code": f"{rng.randint(1000, 99999)}"},
            "registered_country": country_part if rng.random() < 0.9 else {**country_part, "is_in_european_union":
                                                                            True},
            "subdivisions": [{"geoname_id": 2_000_000 + _stable(sub.code),
                              "iso_code": sub.code.split("-", 1)[1], "names": _names(sub.name)}],
            "traits": {"is_anycast": rng.random() < 0.001},
        })  # fmt: skip
    return out


def build(path: Path, networks: int, seed: int = 1) -> None:
    """Write the synthetic city database to *path* (atomically)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet

    rng = random.Random(seed)
    records = _records(rng)
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=list(LANGUAGES),
                        description="geofence benchmark: synthetic GeoIP2-City-shaped database")  # fmt: skip
    blocks = [b for b in range(1 << 20) if is_public_v4(b << 12) and is_public_v4((b << 12) | 0xFFF)]
    written = array("Q")
    for block in rng.sample(blocks, networks):
        length = rng.choice((20, 21, 22, 23, 24, 24, 24, 24, 25, 26, 27, 28))
        base = (block << 12) | (rng.getrandbits(length - 20) << (32 - length) if length > 20 else 0)
        writer.insert_network(IPSet([IPNetwork((base, length))]), records[rng.randrange(RECORDS)])
        written.append(base << 8 | length)
    for _ in range(networks // 10):
        length = rng.choice((32, 36, 40, 44, 48))
        value = (0x2 << 124 | rng.getrandbits(124)) >> (128 - length) << (128 - length)
        writer.insert_network(IPSet([IPNetwork((value, length), version=6)]), records[rng.randrange(RECORDS)])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    writer.to_db_file(str(tmp))
    _sidecar(path).write_bytes(written.tobytes())  # the IPv4 networks, to draw addresses from
    tmp.replace(path)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".networks")


def fresh_addresses(path: Path, seed: int) -> Iterator[str]:
    """Random IPv4 addresses of the database at *path*, each in one of its networks not used before."""
    networks = array("Q")
    networks.frombytes(_sidecar(path).read_bytes())
    rng = random.Random(seed)
    order = list(range(len(networks)))
    rng.shuffle(order)
    for i in order:
        base, length = networks[i] >> 8, networks[i] & 0xFF
        yield v4_text(base | rng.getrandbits(32 - length))
    raise RuntimeError(f"{path}: all {len(networks):,} networks used; measure fewer lookups")


def database(networks: int, log: Callable[[str], None] = print) -> tuple[Path, float | None]:
    """The cached database for *networks* (built when missing); the seconds it took to build, if built now."""
    path = CACHE / f"city-{networks}-v{VERSION}.mmdb"
    if path.exists() and _sidecar(path).exists():
        return path, None
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"  building {path.relative_to(CACHE.parents[1])} ({networks:,} networks; once, then cached) ...")
    start = time.monotonic()
    build(path, networks)
    return path, time.monotonic() - start


def measure(networks: int, n: int, rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    path, built = database(networks, log)
    n = min(n, (networks - 500) // (4 * rounds))  # every lookup in a network not used before
    reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP_EXT)
    addresses = fresh_addresses(path, 5)
    bare_app = apps.make_bare()
    protected = apps.protect(apps.make_bare(), apps.example_policy(databases=[str(path)]))
    per_request_us(protected, [scope(next(addresses)) for _ in range(500)])

    # One long-lived Locator, as a server keeps: every lookup still misses its network cache (each address is in
    # a network not looked up before); what a process learns once (the distinct answers) stays learnt. Opened
    # like the bare reader (mmap), so both read the same warm pages.
    located = Locator(str(path), load="mmap")
    per_call_ns(located.lookup, [next(addresses) for _ in range(500)])

    def locator() -> float:
        return per_call_ns(located.lookup, [next(addresses) for _ in range(n)])

    samples = interleaved(rounds, {
        "get": lambda: per_call_ns(reader.get, [next(addresses) for _ in range(n)]),
        "locator": locator,
        "bare_app": lambda: per_request_us(bare_app, [scope(next(addresses)) for _ in range(n)]) * 1000,
        "middleware": lambda: per_request_us(protected, [scope(next(addresses)) for _ in range(n)]) * 1000,
    })  # fmt: skip
    get, located = median(samples["get"]), median(samples["locator"])
    added = median(samples["middleware"]) - median(samples["bare_app"])
    meta = reader.metadata()
    return {
        "path": str(path.relative_to(CACHE.parents[1])), "networks": networks, "nodes": meta.node_count,
        "size_mib": path.stat().st_size / 2**20, "built_s": built, "n": n, "rounds": rounds,
        "get_ns": get, "locator_ns": located, "locator_ratio": located / get,
        "middleware_added_ns": added, "middleware_ratio": added / get,
        "bare_app_ns": median(samples["bare_app"]), "middleware_ns": median(samples["middleware"]),
    }  # fmt: skip


def table(r: dict[str, Any]) -> Table:
    rows = [
        ["maxminddb reader.get(ip)", f"{r['get_ns']:,.0f}", "1.00x"],
        ["geofence Locator(path).lookup(ip), cache miss", f"{r['locator_ns']:,.0f}", f"{r['locator_ratio']:.2f}x"],
        ["geofence middleware, cold path, added over bare app", f"{r['middleware_added_ns']:,.0f}",
         f"{r['middleware_ratio']:.2f}x"],
    ]  # fmt: skip
    return Table(
        "City-sized database (per lookup; a new network every time)",
        ["what", "ns", "vs reader.get"],
        rows,
        [f"{r['path']}: {r['networks']:,} IPv4 networks + 10% IPv6, {r['nodes']:,} tree nodes, {r['size_mib']:.0f} MiB"
         + (f" (built in {r['built_s']:.0f} s)" if r.get("built_s") else " (cached)"),
         f"median of {r['rounds']} interleaved rounds of {r['n']:,} lookups"],
    )  # fmt: skip


if __name__ == "__main__":
    from benchmarks.suite import main

    raise SystemExit(main(["--only", "citydb", *sys.argv[1:]]))
