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


Probe = tuple[tuple[int, dict[int, V]], ...]


def _has(probe: Probe[V], shift: int) -> bool:
    for s, _ in probe:
        if s == shift:
            return True
    return False


class NetworkCache(Generic[V]):
    """Map networks (128-bit key space, prefix length 0..128) to values; evict the oldest when full.

    Reads take no lock: each probe is one dict lookup of a complete entry, and probe lists are replaced as
    whole tuples. Writers hold a lock. A bucket's list is not pruned on eviction (a stale length costs one
    lookup), and the bucket map is reset when it outgrows four times *maxsize*.
    """

    __slots__ = ("_buckets", "_lock", "_order", "_puts", "_short4", "_short6", "_tables", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._tables: dict[int, dict[int, V]] = {}
        self._buckets: dict[int, Probe[V]] = {}  # bucket -> (shift, table) of the lengths present in it
        self._short4: Probe[V] = ()  # tables of IPv4 networks shorter than a bucket, most populated first
        self._short6: Probe[V] = ()
        self._order: deque[tuple[int, int]] = deque()  # (prefix, network bits), oldest first
        self._puts = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: int) -> V | None:
        if key >> 32 == _V4_TOP:
            bucket, short = key >> 16, self._short4
        else:
            bucket, short = key >> 96, self._short6
        for shift, table in self._buckets.get(bucket, ()):
            value = table.get(key >> shift)
            if value is not None:
                return value
        for shift, table in short:
            value = table.get(key >> shift)
            if value is not None:
                return value
        return None

    def put(self, key: int, prefix: int, value: V) -> None:
        """Store *value* for the network of *prefix* bits holding *key*."""
        shift = 128 - prefix
        bits = key >> shift
        with self._lock:
            table = self._tables.get(prefix)
            if table is None:
                table = self._tables[prefix] = {}
            elif bits in table:
                return  # a concurrent miss stored it already
            order = self._order
            if len(order) >= self.maxsize:
                old_prefix, old_bits = order.popleft()
                del self._tables[old_prefix][old_bits]
            table[bits] = value
            order.append((prefix, bits))
            if key >> 32 == _V4_TOP:
                bucket, bucket_prefix = key >> (128 - _V4_BUCKET), _V4_BUCKET
            else:
                bucket, bucket_prefix = key >> (128 - _V6_BUCKET), _V6_BUCKET
            if prefix >= bucket_prefix:
                probe = self._buckets.get(bucket, ())
                if probe and probe[0][0] == shift and len(probe) == 1:
                    return  # the usual case: the bucket already probes this length
                if not _has(probe, shift):
                    if len(self._buckets) > self.maxsize * 4:
                        self._buckets.clear()  # lists only speed lookups up; a dropped one costs a miss
                    self._buckets[bucket] = (*probe, (shift, table))
            else:
                self._put_short(bucket_prefix, shift, table)

    def _put_short(self, bucket_prefix: int, shift: int, table: dict[int, V]) -> None:
        """Register a table of networks shorter than a bucket (rare: an IPv4 /12, an IPv6 /24)."""
        if bucket_prefix == _V4_BUCKET:
            if not _has(self._short4, shift):
                self._short4 = (*self._short4, (shift, table))
        elif not _has(self._short6, shift):
            self._short6 = (*self._short6, (shift, table))
        self._puts += 1
        if self._puts % _REORDER_EVERY == 0:  # probe short networks most populated first
            self._short4 = tuple(sorted(self._short4, key=lambda e: -len(e[1])))
            self._short6 = tuple(sorted(self._short6, key=lambda e: -len(e[1])))

    def clear(self) -> None:
        with self._lock:
            for table in self._tables.values():
                table.clear()  # a reader still holding an old probe list must find nothing in it
            self._tables.clear()
            self._buckets.clear()
            self._short4 = self._short6 = ()
            self._order.clear()
            self._puts = 0
