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
from collections import deque
from typing import Final, Generic, TypeVar

__all__ = ["NetworkCache"]

V = TypeVar("V")

_V4_TOP: Final = 0xFFFF  # key >> 32 of every IPv4 key (::ffff:0:0/96)
_V4_BUCKET: Final = 96 + 16  # prefix length of an IPv4 bucket (/16), in the 128-bit key space
_V6_BUCKET: Final = 32
_REORDER_EVERY: Final = 256


class NetworkCache(Generic[V]):
    """Map networks (128-bit key space, prefix length 0..128) to values; evict the oldest when full.

    Reads take no lock: each probe is one dict lookup of a complete entry, and probe lists are replaced as
    whole tuples. Writers hold a lock. Everything held is atoms (ints, and tuples of ints) but the values
    and one dict per prefix length, so the garbage collector does not track an object per entry. A bucket's
    probe list lists every length it ever held while any network in it is cached (a stale length costs one
    lookup); a count per bucket drops the list when its last network is evicted.
    """

    __slots__ = ("_buckets", "_by_shift", "_counts", "_lock", "_order", "_puts", "_short4", "_short6", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        # A new table per length: a reader still holding an old probe list finds nothing stale in them.
        self._by_shift: list[dict[int, V]] = [{} for _ in range(129)]  # 128 - prefix -> network bits -> value
        self._buckets: dict[int, tuple[int, ...]] = {}  # bucket -> shifts of the lengths present in it
        self._counts: dict[int, int] = {}  # bucket -> networks cached in it
        self._short4: tuple[int, ...] = ()  # shifts of IPv4 networks shorter than a bucket, most populated first
        self._short6: tuple[int, ...] = ()
        self._order: deque[tuple[int, int, int]] = deque()  # (shift, network bits, bucket or -1), oldest first
        self._puts = 0

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: int) -> V | None:
        if key >> 32 == _V4_TOP:
            bucket, short = key >> 16, self._short4
        else:
            bucket, short = key >> 96, self._short6
        by_shift = self._by_shift
        for shift in self._buckets.get(bucket, ()):
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
        if key >> 32 == _V4_TOP:
            bucket, bucket_shift = key >> (128 - _V4_BUCKET), 128 - _V4_BUCKET
        else:
            bucket, bucket_shift = key >> (128 - _V6_BUCKET), 128 - _V6_BUCKET
        with self._lock:
            table = self._by_shift[shift]
            if bits in table:
                return  # a concurrent miss stored it already
            order = self._order
            if len(order) >= self.maxsize:
                self._evict(*order.popleft())
            table[bits] = value
            if shift > bucket_shift:  # shorter than a bucket: probed for every key of its family
                order.append((shift, bits, -1))
                self._put_short(bucket_shift, shift)
                return
            order.append((shift, bits, bucket))
            counts = self._counts
            counts[bucket] = counts.get(bucket, 0) + 1
            probe = self._buckets.get(bucket, ())
            if shift not in probe:
                self._buckets[bucket] = (*probe, shift)

    def _evict(self, shift: int, bits: int, bucket: int) -> None:
        del self._by_shift[shift][bits]
        if bucket >= 0:
            left = self._counts[bucket] - 1
            if left:
                self._counts[bucket] = left
            else:
                del self._counts[bucket]
                del self._buckets[bucket]

    def _put_short(self, bucket_shift: int, shift: int) -> None:
        """Register the length of a network shorter than a bucket (rare: an IPv4 /12, an IPv6 /24)."""
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
