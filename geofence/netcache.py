"""A bounded cache of address networks: one entry answers for every address inside its network.

A GeoIP database answers for a whole network at once, so the cache stores one entry per network and any
address inside it hits. Per-IP caches (what the surveyed middlewares use) need one miss per client address;
this one needs one per database network.

Layout: one dict per prefix length, keyed by the network bits (``key >> (128 - prefix)``). Networks at least
as long as a *bucket* (IPv4 /16, IPv6 /32) lie inside one bucket, so each bucket lists the tables that hold
its networks and a lookup probes only those (usually one). Shorter networks (an IPv4 /12) are probed in a
separate, short list. Inserts are O(1). Networks stored are disjoint (cells of one partition of the address
space), so any hit is the answer. (A sorted array of ranges found by bisection was tried first: inserts cost
20 µs at 65k entries. Probing every prefix length present costs ~25 dictionary lookups on a miss.)
"""

from __future__ import annotations

import threading
from array import array
from typing import Final, Generic, TypeVar

__all__ = ["NetworkCache"]

V = TypeVar("V")

_V4_TOP: Final = 0xFFFF  # key >> 32 of every IPv4 key (::ffff:0:0/96)
_V4_BUCKET: Final = 96 + 16  # prefix length of an IPv4 bucket (/16), in the 128-bit key space
_V6_BUCKET: Final = 32
_REORDER_EVERY: Final = 256
_LOW: Final = (1 << 64) - 1
_SPREAD_BITS: Final = (
    2  # a network covering up to 4 buckets (an IPv4 /14) is listed in each (measured: more costs inserts)
)


class NetworkCache(Generic[V]):
    """Map networks (128-bit key space, prefix length 0..128) to values; evict the oldest when full.

    Reads take no lock: each probe is one dict lookup of a complete entry, and probe lists are replaced whole.
    Writers hold a lock. Nothing here is a tracked container when the values are strings (the locator's are):
    dicts of ints to strings or bytes, a ring of insertion order in machine-integer arrays. A full collection
    of the garbage collector then visits nothing of a full cache (a dict of tuples and a deque of 65,536
    entries cost it ~10 ms here). A bucket's probe list (a bytes of shifts) lists every length it held while
    any network in it is cached (a stale length costs one lookup); a count per bucket drops the list when its
    last network is evicted.
    """

    __slots__ = (
        "_buckets",
        "_by_shift",
        "_count",
        "_counts",
        "_hi",
        "_lo",
        "_lock",
        "_next",
        "_puts",
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
        self._buckets: dict[int, bytes] = {}  # bucket -> shifts of the lengths present in it
        self._counts: dict[int, int] = {}  # bucket -> networks cached in it
        self._short4: tuple[int, ...] = ()  # shifts of IPv4 networks shorter than a bucket, most populated first
        self._short6: tuple[int, ...] = ()
        # Insertion order, a ring: network bits (two 64-bit halves) and shift; the oldest is at _next when full.
        self._hi = array("Q", bytes(8 * self.maxsize))
        self._lo = array("Q", bytes(8 * self.maxsize))
        self._shifts = bytearray(self.maxsize)
        self._next = 0
        self._count = 0
        self._puts = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: int) -> V | None:
        if key >> 32 == _V4_TOP:
            bucket, short = key >> 16, self._short4
        else:
            bucket, short = key >> 96, self._short6
        by_shift = self._by_shift
        for shift in self._buckets.get(bucket, b""):
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
            bucket, bucket_shift = _bucket(key)
            span = shift - bucket_shift
            if span > _SPREAD_BITS:  # covers too many buckets: probed for every key of its family
                self._put_short(bucket_shift, shift)
                return
            if span <= 0:
                self._register(bucket, shift)
            else:  # shorter than a bucket (an IPv4 /12): listed in each bucket it covers, up to 256
                first = bucket >> span << span
                for covered in range(first, first + (1 << span)):
                    self._register(covered, shift)

    def _register(self, bucket: int, shift: int) -> None:
        counts = self._counts
        counts[bucket] = counts.get(bucket, 0) + 1
        probe = self._buckets.get(bucket, b"")
        if shift not in probe:
            self._buckets[bucket] = probe + bytes((shift,))

    def _evict(self, slot: int) -> None:
        shift = self._shifts[slot]
        bits = self._hi[slot] << 64 | self._lo[slot]
        del self._by_shift[shift][bits]
        bucket, bucket_shift = _bucket(bits << shift)
        span = shift - bucket_shift
        if span > _SPREAD_BITS:
            return  # in the short list, which keeps every length it ever held (a stale one costs one probe)
        first = bucket >> span << span if span > 0 else bucket
        for covered in range(first, first + (1 << max(span, 0))):
            left = self._counts[covered] - 1
            if left:
                self._counts[covered] = left
            else:
                del self._counts[covered]
                del self._buckets[covered]

    def _put_short(self, bucket_shift: int, shift: int) -> None:
        """Register the length of a network that covers more than 256 buckets (rare: an IPv4 /7, an IPv6 /23)."""
        if bucket_shift == 128 - _V4_BUCKET:
            if shift not in self._short4:
                self._short4 = (*self._short4, shift)
        elif shift not in self._short6:
            self._short6 = (*self._short6, shift)
        self._puts += 1
        if self._puts % _REORDER_EVERY == 0:  # probe short networks most populated first
            by_shift = self._by_shift
            self._short4 = tuple(sorted(self._short4, key=lambda s: -len(by_shift[s])))
            self._short6 = tuple(sorted(self._short6, key=lambda s: -len(by_shift[s])))

    def clear(self) -> None:
        with self._lock:
            for table in self._by_shift:
                table.clear()  # a reader still holding the old tables must find nothing in them
            self._reset()


def _bucket(key: int) -> tuple[int, int]:
    """(bucket id, bucket shift) of *key*: IPv4 /16s, IPv6 /32s."""
    if key >> 32 == _V4_TOP:
        return key >> (128 - _V4_BUCKET), 128 - _V4_BUCKET
    return key >> (128 - _V6_BUCKET), 128 - _V6_BUCKET
