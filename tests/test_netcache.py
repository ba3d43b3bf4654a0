from __future__ import annotations

import gc
import random
import sys
import threading

import pytest

from geofence.caches.networks import NetworkCache

V4 = 0xFFFF << 32


def v4(a: int, b: int, c: int, d: int) -> int:
    return V4 | (a << 24) | (b << 16) | (c << 8) | d


def test_hits_anywhere_inside_the_network_and_misses_outside() -> None:
    cache: NetworkCache[str] = NetworkCache(10)
    cache.put(v4(8, 8, 8, 8), 96 + 24, "a")  # 8.8.8.0/24
    cache.put(v4(1, 1, 1, 1), 96 + 32, "b")  # 1.1.1.1/32
    assert cache.get(v4(8, 8, 8, 0)) == cache.get(v4(8, 8, 8, 255)) == "a"
    assert cache.get(v4(8, 8, 7, 255)) is None and cache.get(v4(8, 8, 9, 0)) is None
    assert cache.get(v4(1, 1, 1, 1)) == "b" and cache.get(v4(1, 1, 1, 2)) is None


def test_whole_space() -> None:
    cache: NetworkCache[str] = NetworkCache(10)
    cache.put(12345, 0, "everything")
    assert cache.get(0) == cache.get((1 << 128) - 1) == "everything"


def test_same_network_twice_is_one_entry() -> None:
    cache: NetworkCache[str] = NetworkCache(10)
    cache.put(v4(8, 8, 8, 1), 96 + 24, "a")
    cache.put(v4(8, 8, 8, 2), 96 + 24, "z")  # two concurrent misses in one network
    assert len(cache) == 1 and cache.get(v4(8, 8, 8, 3)) == "a"


def test_evicts_oldest_first() -> None:
    cache: NetworkCache[int] = NetworkCache(3)
    for i in range(5):
        cache.put(v4(10 + i, 0, 0, 0), 96 + 8, i)
    assert len(cache) == 3
    assert [cache.get(v4(10 + i, 1, 2, 3)) for i in range(5)] == [None, None, 2, 3, 4]


def test_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        NetworkCache(0)


def test_matches_a_reference_model() -> None:
    """Random disjoint networks of many lengths: every hit is the network holding the key."""
    rng = random.Random(7)
    cache: NetworkCache[tuple[int, int]] = NetworkCache(200)
    networks = []
    for i in range(2000):  # one network per /16 of 10.x (never overlapping), of random length /16../32
        prefix = rng.randrange(16, 33)
        start = v4(10 + i // 256, i % 256, 0, 0)
        networks.append((start, 96 + prefix))
    for _ in range(20000):
        start, prefix = rng.choice(networks)
        key = start | rng.getrandbits(16)
        got = cache.get(key)
        if got is not None:
            assert got[0] == key >> (128 - got[1]) << (128 - got[1])
            assert key >> (128 - got[1]) == got[0] >> (128 - got[1])
        inside = key >> (128 - prefix) == start >> (128 - prefix)
        if inside:
            cache.put(key, prefix, (start, prefix))
            assert cache.get(key) == (start, prefix)
        assert len(cache) <= 200


def test_concurrent_readers_never_get_a_wrong_network() -> None:
    cache: NetworkCache[int] = NetworkCache(64)
    stop = threading.Event()
    errors: list[str] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            n = rng.randrange(4096)
            cache.put(v4(10, n >> 4, (n & 15) << 4, 0), 96 + 20 + (n & 3), n)

    def reader() -> None:
        rng = random.Random(3)
        for _ in range(50_000):
            key = v4(10, rng.randrange(256), rng.randrange(256), rng.randrange(256))
            n = cache.get(key)
            if n is not None:
                prefix = 96 + 20 + (n & 3)
                if key >> (128 - prefix) != v4(10, n >> 4, (n & 15) << 4, 0) >> (128 - prefix):
                    errors.append(f"{key:x} -> {n}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        writers = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in writers + readers:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        for t in writers:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_clear_empties_tables_a_racing_reader_may_still_hold() -> None:
    cache: NetworkCache[str] = NetworkCache(10)
    cache.put(v4(8, 8, 8, 8), 96 + 24, "old")
    held = cache._by_shift  # what a get() in flight on another thread reads
    cache.clear()
    assert not any(held)
    assert cache.get(v4(8, 8, 8, 8)) is None


def test_bucket_lists_stay_bounded_when_every_lookup_is_new() -> None:
    cache: NetworkCache[int] = NetworkCache(100)
    for i in range(20_000):
        cache.put(v4(i >> 8 & 255, i & 255, 0, 0), 96 + 24, i)
    assert len(cache) == 100
    assert len(cache._fine) <= 100 and sum(cache._counts.values()) == 100  # a bucket goes with its last network
    assert cache.get(v4(78, 31, 0, 9)) == 19999
    assert cache.get(v4(0, 1, 0, 9)) is None  # evicted


def test_entries_are_invisible_to_the_garbage_collector() -> None:
    """A full collection visits every reference a tracked container holds: a full cache of strings must hold
    no tracked container at all (the locator's values are strings)."""
    cache: NetworkCache[str] = NetworkCache(5000)
    for i in range(6000):
        cache.put(v4(i >> 8 & 255, i & 255, 0, 0), 96 + 24, f"{i} net")
    assert len(cache) == 5000
    assert not any(gc.is_tracked(table) for table in cache._by_shift)
    assert not any(gc.is_tracked(d) for d in (cache._fine, cache._coarse, cache._counts))
    assert all(gc.get_referents(ring) == [type(ring)] for ring in (cache._hi, cache._lo))


def test_short_and_long_networks_of_both_families() -> None:
    cache: NetworkCache[str] = NetworkCache(100)
    cache.put(v4(10, 1, 2, 3), 96 + 8, "v4 /8")  # shorter than a bucket
    cache.put(v4(11, 1, 2, 3), 96 + 24, "v4 /24")
    cache.put((0x2A00_1450 << 96) | 5, 29, "v6 /29")  # shorter than a bucket
    cache.put((0x2A01_0000 << 96) | 5, 48, "v6 /48")
    assert cache.get(v4(10, 200, 0, 1)) == "v4 /8"
    assert cache.get(v4(11, 1, 2, 200)) == "v4 /24"
    assert cache.get(v4(11, 1, 3, 0)) is None
    assert cache.get((0x2A00_1451 << 96) | 1) == "v6 /29"
    assert cache.get((0x2A01_0000 << 96) | 99) == "v6 /48"
    assert cache.get((0x2A01_0000 << 96) | (1 << 80)) is None


def test_medium_networks_are_listed_in_their_coarse_bucket_until_evicted() -> None:
    """A /12 lies in one IPv4 /8: listed there, a lookup anywhere in the /8 probes its length (and nothing
    else); evicting it unlists it."""
    cache: NetworkCache[str] = NetworkCache(2)
    cache.put(v4(10, 16, 0, 1), 96 + 12, "/12")  # 10.16.0.0/12
    assert cache._short4 == b"" and len(cache._coarse) == 1 and not cache._fine
    assert cache.get(v4(10, 31, 255, 255)) == "/12" and cache.get(v4(10, 16, 0, 0)) == "/12"
    assert cache.get(v4(10, 32, 0, 0)) is None and cache.get(v4(10, 15, 255, 255)) is None
    cache.put(v4(8, 8, 8, 8), 96 + 24, "/24")
    cache.put(v4(9, 9, 9, 9), 96 + 24, "/24 b")  # evicts the /12
    assert cache.get(v4(10, 20, 0, 0)) is None
    assert not cache._coarse and len(cache._fine) == 2 and sum(cache._counts.values()) == 2


def test_a_very_short_network_goes_to_the_short_list() -> None:
    cache: NetworkCache[str] = NetworkCache(4)
    cache.put(v4(64, 0, 0, 1), 96 + 2, "/2")  # wider than a /8: probed for every IPv4 address
    assert cache._short4 == bytes((128 - 98,)) and not cache._fine and not cache._coarse
    assert cache.get(v4(127, 1, 2, 3)) == "/2" and cache.get(v4(128, 0, 0, 0)) is None


def test_a_network_is_unlisted_by_the_address_it_was_listed_by() -> None:
    """Listed and unlisted by its first address, whatever key it was put with (a network crossing the IPv4
    space is never made by the locator, but must not wedge the cache)."""
    cache: NetworkCache[str] = NetworkCache(1)
    cache.put(0xFFFF << 32 | 0x01020304, 32, "::/32")
    cache.put(0xFFFF << 32 | 0x08080808, 120, "/24")  # evicts the first
    cache.put(v4(9, 9, 9, 9), 96 + 24, "/24 b")
    assert cache.get(v4(9, 9, 9, 1)) == "/24 b" and len(cache) == 1 and sum(cache._counts.values()) == 1
