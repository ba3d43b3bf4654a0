"""A bounded cache of address networks: one entry answers for every address inside its network.

A GeoIP database answers for a whole network at once, so the cache stores one entry per network and any
address inside it hits. Per-IP caches (what the surveyed middlewares use) need one miss per client address;
this one needs one per database network.

Layout: one dict per prefix length, keyed by the network bits (``key >> (128 - prefix)``). Which lengths to
probe for an address comes from two levels of *buckets*: a network at least as long as a fine bucket (IPv4
/16, IPv6 /32) lies in one, and is listed there; a network between a coarse bucket (IPv4 /8, IPv6 /16) and a
fine one is listed in its coarse bucket; only shorter ones (rare) are probed for every address of their
family. A lookup, hit or miss, so probes the one or two lengths present around the address. Inserts are O(1).
Networks stored are disjoint (cells of one partition of the address space), so any hit is the answer. (A
sorted array of ranges found by bisection was tried first: inserts cost 20 µs at 65k entries. With one level
of buckets, a miss probed every medium length present, ~8 with a country database.)

Nothing here is a tracked container when the values are strings (the locator's are): dicts of ints to strings
or bytes, and a ring of insertion order in machine-integer arrays. A full collection of the garbage collector
visits nothing of a full cache (a dict of tuples and a deque of 65,536 entries cost it ~10 ms here).
"""

from __future__ import annotations

import threading
from array import array
from typing import Final, Generic, TypeVar

__all__ = ["NetworkCache"]

V = TypeVar("V")

_V4_TOP: Final = 0xFFFF  # key >> 32 of every IPv4 key (::ffff:0:0/96)
# Bucket shifts (128 - prefix length) in the 128-bit key space: fine and coarse, per family.
_V4_FINE: Final = 128 - (96 + 16)
_V4_COARSE: Final = 128 - (96 + 8)
_V6_FINE: Final = 128 - 32
_V6_COARSE: Final = 128 - 16
_LOW: Final = (1 << 64) - 1


class NetworkCache(Generic[V]):
    """Map networks (128-bit key space, prefix length 0..128) to values; evict the oldest when full.

    Reads take no lock: each probe is one dict lookup of a complete entry, and probe lists are replaced whole.
    Writers hold a lock. A bucket's probe list (a bytes of shifts) lists every length it held while any network
    in it is cached (a stale length costs one lookup); a count per bucket drops the list with its last network.
    """

    __slots__ = (
        "_by_shift",
        "_coarse",
        "_count",
        "_counts",
        "_fine",
        "_hi",
        "_lo",
        "_lock",
        "_next",
        "_shifts",
        "_short4",
        "_short6",
        "maxsize",
    )

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        # A new table per length: a reader still holding an old probe list finds nothing stale in them.
        self._by_shift: list[dict[int, V]] = [{} for _ in range(129)]  # 128 - prefix -> network bits -> value
        self._fine: dict[int, bytes] = {}  # fine bucket -> shifts of the lengths cached in it
        self._coarse: dict[int, bytes] = {}  # coarse bucket -> shifts of the medium lengths cached in it
        self._counts: dict[int, int] = {}  # (bucket << 1 | coarse) -> networks listed under it
        self._short4: bytes = b""  # shifts of IPv4 networks shorter than a coarse bucket
        self._short6: bytes = b""
        # Insertion order, a ring: network bits (two 64-bit halves) and shift; the oldest is at _next when full.
        self._hi = array("Q", bytes(8 * self.maxsize))
        self._lo = array("Q", bytes(8 * self.maxsize))
        self._shifts = bytearray(self.maxsize)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: int) -> V | None:
        by_shift = self._by_shift
        if key >> 32 == _V4_TOP:
            fine, coarse, short = key >> _V4_FINE, key >> _V4_COARSE, self._short4
        else:
            fine, coarse, short = key >> _V6_FINE, key >> _V6_COARSE, self._short6
        for shift in self._fine.get(fine, b""):
            value = by_shift[shift].get(key >> shift)
            if value is not None:
                return value
        for shift in self._coarse.get(coarse, b""):
            value = by_shift[shift].get(key >> shift)
            if value is not None:
                return value
        for shift in short:
            value = by_shift[shift].get(key >> shift)
            if value is not None:
                return value
        return None

    def put(self, key: int, prefix: int, value: V) -> None:
        """Store *value* for the network of *prefix* bits holding *key*."""
        shift = 128 - prefix
        bits = key >> shift
        with self._lock:
            table = self._by_shift[shift]
            if bits in table:
                return  # a concurrent miss stored it already
            slot = self._next
            if self._count >= self.maxsize:
                self._evict(slot)
            else:
                self._count += 1
            self._next = slot + 1 if slot + 1 < self.maxsize else 0
            self._hi[slot], self._lo[slot], self._shifts[slot] = bits >> 64, bits & _LOW, shift
            table[bits] = value
            self._list(bits << shift, shift, 1)  # as _evict will: by the network's first address

    def _evict(self, slot: int) -> None:
        shift = self._shifts[slot]
        bits = self._hi[slot] << 64 | self._lo[slot]
        del self._by_shift[shift][bits]
        self._list(bits << shift, shift, -1)

    def _list(self, key: int, shift: int, change: int) -> None:
        """List (*change* 1) or unlist (-1) a network of *shift* holding *key* where lookups will probe it."""
        v4 = key >> 32 == _V4_TOP
        fine, coarse = (_V4_FINE, _V4_COARSE) if v4 else (_V6_FINE, _V6_COARSE)
        if shift <= fine:
            lists, bucket, tag = self._fine, key >> fine, key >> fine << 1
        elif shift <= coarse:
            lists, bucket, tag = self._coarse, key >> coarse, key >> coarse << 1 | 1
        else:  # shorter than a coarse bucket: probed for every address of its family; the list is never pruned
            if change > 0:
                if v4 and shift not in self._short4:
                    self._short4 += bytes((shift,))
                elif not v4 and shift not in self._short6:
                    self._short6 += bytes((shift,))
            return
        left = self._counts.get(tag, 0) + change
        if left > 0:
            self._counts[tag] = left
            probe = lists.get(bucket, b"")
            if change > 0 and shift not in probe:
                lists[bucket] = probe + bytes((shift,))
        else:
            del self._counts[tag], lists[bucket]

    def clear(self) -> None:
        with self._lock:
            for table in self._by_shift:
                table.clear()  # a reader still holding the old tables must find nothing in them
            self._reset()
