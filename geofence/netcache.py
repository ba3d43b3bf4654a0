"""A bounded cache of address networks: one entry answers for every address inside its network.

A GeoIP database answers for a whole network at once, so the cache stores one entry per network and any
address inside it hits. Per-IP caches (what the surveyed middlewares use) need one miss per client address;
this one needs one per database network.

Layout: one dict per prefix length, keyed by the network bits (``key >> (128 - prefix)``), and a hint per
neighbourhood (IPv4 /24, IPv6 /48) naming the table that last answered there. A hit is usually two dict
lookups; when the hint is missing or stale, every length present is probed (most populated first) and the
hint is updated. Inserts are O(1): a sorted array of ranges found by bisection was tried first, and its
inserts cost 20 µs at 65k entries. Networks stored are disjoint (cells of one partition of the address
space), so any hit is the answer.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["NetworkCache"]

V = TypeVar("V")

_REORDER_EVERY = 256  # inserts between re-sorting the probe order by table size


class NetworkCache(Generic[V]):
    """Map networks (128-bit key space, prefix length 0..128) to values; evict the oldest when full.

    Reads take no lock: each probe is a single dict lookup of a complete entry, and the probe order is
    replaced as a whole. Writers hold a lock.
    """

    __slots__ = ("_hints", "_lock", "_order", "_probe", "_puts", "_tables", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._tables: dict[int, dict[int, V]] = {}
        self._probe: tuple[tuple[int, dict[int, V]], ...] = ()  # (shift, table), most populated first
        self._order: deque[tuple[int, int]] = deque()  # (prefix, network bits), oldest first
        self._hints: dict[int, tuple[int, dict[int, V]]] = {}  # neighbourhood -> (shift, table)
        self._puts = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, key: int) -> V | None:
        near = key >> 8 if key >> 32 == 0xFFFF else key >> 80
        hint = self._hints.get(near)
        if hint is not None:
            value = hint[1].get(key >> hint[0])
            if value is not None:
                return value
        for shift, table in self._probe:
            value = table.get(key >> shift)
            if value is not None:
                if len(self._hints) > self.maxsize * 4:
                    self._hints.clear()  # hints only speed things up: dropping them is always safe
                self._hints[near] = (shift, table)
                return value
        return None

    def put(self, key: int, prefix: int, value: V) -> None:
        """Store *value* for the network of *prefix* bits holding *key*."""
        bits = key >> (128 - prefix)
        with self._lock:
            table = self._tables.get(prefix)
            if table is None:
                table = self._tables[prefix] = {}
                self._puts = -1  # reorder now so the new length is probed
            elif bits in table:
                return  # a concurrent miss stored it already
            if len(self._order) >= self.maxsize:
                old_prefix, old_bits = self._order.popleft()
                del self._tables[old_prefix][old_bits]
            table[bits] = value
            self._order.append((prefix, bits))
            if len(self._hints) > self.maxsize * 4:
                self._hints.clear()
            self._hints[key >> 8 if key >> 32 == 0xFFFF else key >> 80] = (128 - prefix, table)
            self._puts += 1
            if self._puts % _REORDER_EVERY == 0:
                # Empty tables stay (last): a table once probed must stay probed, or its next entry is lost.
                by_size = sorted(self._tables, key=lambda p: len(self._tables[p]), reverse=True)
                self._probe = tuple((128 - p, self._tables[p]) for p in by_size)

    def clear(self) -> None:
        with self._lock:
            for table in self._tables.values():
                table.clear()  # a reader still holding an old probe tuple must find nothing in it
            self._tables.clear()
            self._order.clear()
            self._hints.clear()
            self._probe = ()
            self._puts = 0
