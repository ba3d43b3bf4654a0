"""A bounded cache of disjoint address ranges, found by bisection.

A GeoIP database answers for a whole network at once, so the cache stores one entry per network and any
address inside it hits. Per-IP caches (what the surveyed middlewares use) need one miss per client address;
this one needs one per database network, and a hit costs one C-level ``bisect`` whatever the prefix length.

Ranges never overlap because they are cells of one partition of the address space: the databases' own
networks, intersected, and clipped at special-purpose ranges.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import deque
from typing import Generic, TypeVar

__all__ = ["NetworkCache"]

V = TypeVar("V")


class NetworkCache(Generic[V]):
    """Map disjoint inclusive integer ranges to values; evict oldest first when full.

    Reads take no lock. Writers hold a lock; a reader racing one may compute a stale index, so it checks the
    bounds stored with the entry itself (and treats an index that fell off the end as a miss): it can miss
    but never return another range's value.
    """

    __slots__ = ("_entries", "_firsts", "_lock", "_order", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._firsts: list[int] = []
        self._entries: list[tuple[int, int, V]] = []
        self._order: deque[int] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._firsts)

    def get(self, key: int) -> V | None:
        i = bisect_right(self._firsts, key) - 1
        if i >= 0:
            try:
                first, last, value = self._entries[i]
            except IndexError:  # a writer shrank the lists under us: a miss, never a wrong answer
                return None
            if first <= key <= last:
                return value
        return None

    def put(self, first: int, last: int, value: V) -> None:
        """Store *value* for ``first..last``. A range already present (a concurrent miss) is left alone."""
        with self._lock:
            i = bisect_right(self._firsts, first)
            if (i and self._entries[i - 1][1] >= first) or (i < len(self._firsts) and self._firsts[i] <= last):
                return
            if len(self._firsts) >= self.maxsize:
                self._evict_oldest()
                i = bisect_right(self._firsts, first)
            self._entries.insert(i, (first, last, value))
            self._firsts.insert(i, first)
            self._order.append(first)

    def _evict_oldest(self) -> None:
        first = self._order.popleft()
        i = bisect_right(self._firsts, first) - 1
        del self._firsts[i]
        del self._entries[i]

    def clear(self) -> None:
        with self._lock:
            self._firsts.clear()
            self._entries.clear()
            self._order.clear()
