"""A bounded cache for the request path: a budget in entries *and* bytes, evicting a little at a time.

Keys on the request path come from the client (paths, hosts, headers, tokens), so a cache bounded only by
entry count can be made to hold megabytes per entry, and a cache that clears itself when full turns one
hostile burst into a stall for everyone. This one evicts with CLOCK (second chance): a hit only sets a byte
for the entry's slot; when room is needed the hand evicts the next slot, unless it was hit since the hand last
passed, in which case it is spared once. The hot set stays; the cost of an eviction is bounded.

Laid out for the garbage collector as much as for speed. A full collection visits every reference held by
every tracked container, and in a large heap each visit is a cache miss (~50 ns measured here): a 65,536-entry
cache of tuples in a dict plus a list of keys cost ~10 ms per full collection, a stall for whichever request
triggers it. So the bookkeeping is dicts of plain values (``key -> slot and size`` packed in one int,
``slot -> key``), a bytearray of "used" bits and an array of free slots. A dict holding only strings, bytes,
numbers and None is never tracked by the collector: a cache whose keys and values are such atoms costs a full
collection nothing, however large it grows. (Callers with large caches keep them so; the small front cache
holds built objects.)

Hand-written rather than ``cachetools.LRUCache``: a hit there is a Python-level ``__getitem__`` that also
reorders a linked list (~0.4 µs measured on the build machine against ~0.1 µs here), and its nodes are
tracked objects.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ENTRY_OVERHEAD: Final = 100
"""Bytes charged per entry beyond its reported size: the dict slots and the key."""
_SECOND_CHANCES: Final = 32  # per insertion: bounded work (~3 µs) even when every entry was hit
_SIZE_BITS: Final = 32
_SIZE_MASK: Final = (1 << _SIZE_BITS) - 1


class BoundedCache(Generic[K, V]):
    """At most *max_entries* entries and *max_bytes* bytes (as reported to :meth:`put`).

    :meth:`get` takes no lock (two dict lookups and one byte store); :meth:`put` holds a lock, so threads may
    share a cache.
    """

    __slots__ = (
        "_at",
        "_data",
        "_free",
        "_hand",
        "_lock",
        "_meta",
        "_used",
        "max_bytes",
        "max_entries",
        "max_item_bytes",
        "size_bytes",
    )

    def __init__(self, max_entries: int, max_bytes: int | None = None, max_item_bytes: int | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes if max_bytes is not None else max_entries * 1024
        default_item = max(1, self.max_bytes // 64)
        self.max_item_bytes = min(max_item_bytes if max_item_bytes is not None else default_item, _SIZE_MASK)
        self._lock = threading.Lock()
        self._data: dict[K, V] = {}
        self._meta: dict[K, int] = {}  # key -> slot << 32 | size
        self._at: dict[int, K] = {}  # slot -> key
        self._used = bytearray()  # by slot: hit since the hand last passed
        self._free = array("q")  # slots left empty by evictions for bytes, and by replaced keys
        self._hand = 0
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        """The value for *key*, or None; marks the entry as recently used."""
        value = self._data.get(key)
        if value is not None:
            meta = self._meta.get(key)
            if meta is not None:  # None only if a put on another thread evicted it just now
                self._used[meta >> _SIZE_BITS] = 1
        return value

    def put(self, key: K, value: V, size: int = 0) -> bool:
        """Store *value*; *size* is what the entry costs in bytes beyond a fixed overhead. Entries larger than
        ``max_item_bytes`` are not stored (the caller recomputes them): False is returned."""
        size += ENTRY_OVERHEAD
        if size > self.max_item_bytes:
            return False
        with self._lock:
            data, meta, at, used, free = self._data, self._meta, self._at, self._used, self._free
            old = meta.pop(key, None)
            if old is not None:
                del data[key], at[old >> _SIZE_BITS]
                free.append(old >> _SIZE_BITS)
                self.size_bytes -= old & _SIZE_MASK
            # CLOCK, inlined (this runs on every cache miss of the request path): advance the hand, sparing
            # (once, and at most _SECOND_CHANCES times per call) the entries hit since it last passed.
            room_entries, room_bytes = self.max_entries, self.max_bytes - size
            used_bytes = self.size_bytes
            if data and (len(data) >= room_entries or used_bytes > room_bytes):
                chances = _SECOND_CHANCES
                hand, cap = self._hand, len(used)
                while data and (len(data) >= room_entries or used_bytes > room_bytes):
                    if hand >= cap:
                        hand = 0
                    if hand in at:
                        if used[hand] and chances:
                            used[hand] = 0
                            chances -= 1
                        else:
                            victim = at.pop(hand)
                            del data[victim]
                            used_bytes -= meta.pop(victim) & _SIZE_MASK
                            free.append(hand)
                    hand += 1
                self._hand = hand
            if free:
                slot = free.pop()
                used[slot] = 0
            else:
                slot = len(used)
                used.append(0)
            at[slot] = key
            data[key] = value
            meta[key] = slot << _SIZE_BITS | size
            self.size_bytes = used_bytes + size
        return True

    def clear(self) -> None:
        """Drop every entry (only for tests and tools: the request path never clears a whole cache)."""
        with self._lock:
            self._data = {}
            self._meta = {}
            self._at = {}
            self._used = bytearray()
            self._free = array("q")
            self._hand = 0
            self.size_bytes = 0
