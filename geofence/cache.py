"""A bounded cache for the request path: a budget in entries *and* bytes, evicting a little at a time.

Keys on the request path come from the client (paths, hosts, headers, tokens), so a cache bounded only by
entry count can be made to hold megabytes per entry, and a cache that clears itself when full turns one
hostile burst into a stall for everyone. This one evicts with CLOCK (second chance): a hit only sets a flag
on the entry; when room is needed the oldest entry goes, unless it was hit since it was last looked at, in
which case it moves to the back once. The hot set stays; the cost of an eviction is bounded.

Hand-written rather than ``cachetools.LRUCache``: a hit there is a Python-level ``__getitem__`` that also
reorders a linked list (~0.4 µs measured on the build machine against ~0.05 µs here), and the warm request
path makes several cache probes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_SECOND_CHANCES: Final = 32  # per insertion: bounded work (~3 µs) even when every entry was hit


class BoundedCache(Generic[K, V]):
    """At most *max_entries* entries and *max_bytes* bytes (as reported to :meth:`put`)."""

    __slots__ = ("_data", "max_bytes", "max_entries", "max_item_bytes", "size_bytes")

    def __init__(self, max_entries: int, max_bytes: int | None = None, max_item_bytes: int | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._data: OrderedDict[K, list[object]] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes if max_bytes is not None else max_entries * 1024
        self.max_item_bytes = max_item_bytes if max_item_bytes is not None else max(1, self.max_bytes // 64)
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        """The value for *key*, or None; marks the entry as recently used."""
        entry = self._data.get(key)
        if entry is None:
            return None
        entry[1] = True
        return entry[0]  # type: ignore[return-value]

    def put(self, key: K, value: V, size: int = 0) -> bool:
        """Store *value*; *size* is what the entry costs in bytes beyond a fixed overhead. Entries larger than
        ``max_item_bytes`` are not stored (the caller recomputes them): False is returned."""
        size += 100  # the dict slot, the entry list and the key tuple
        if size > self.max_item_bytes:
            return False
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.size_bytes -= old[2]  # type: ignore[operator]
        chances = _SECOND_CHANCES
        while len(data) >= self.max_entries or self.size_bytes + size > self.max_bytes:
            if not data:
                break
            oldest, entry = data.popitem(last=False)
            if entry[1] and chances:
                chances -= 1
                entry[1] = False
                data[oldest] = entry
                continue
            self.size_bytes -= entry[2]  # type: ignore[operator]
        data[key] = [value, False, size]
        self.size_bytes += size
        return True

    def clear(self) -> None:
        self._data.clear()
        self.size_bytes = 0
