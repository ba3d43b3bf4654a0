"""The bounded cache: entry and byte budgets, second-chance eviction that keeps the hot set."""

from __future__ import annotations

import pytest

from geofence.cache import BoundedCache


def test_entry_budget_evicts_oldest_unused_first() -> None:
    cache: BoundedCache[int, str] = BoundedCache(4, max_bytes=1 << 20)
    for i in range(4):
        cache.put(i, str(i))
    assert cache.get(0) == "0"  # hot
    cache.put(4, "4")
    assert len(cache) == 4
    assert 0 in cache and 1 not in cache  # the unused oldest went, the hot one got a second chance


def test_hot_set_survives_a_flood_of_one_time_keys() -> None:
    cache: BoundedCache[str, int] = BoundedCache(100, max_bytes=1 << 20)
    hot = [f"hot{i}" for i in range(10)]
    for key in hot:
        cache.put(key, 1)
    for i in range(10_000):
        for key in hot[: 1 + i % 10]:
            assert cache.get(key) == 1, (i, key)
        cache.put(f"cold{i}", 0)
    assert len(cache) <= 100


def test_byte_budget_bounds_memory_under_large_keys() -> None:
    cache: BoundedCache[str, int] = BoundedCache(10_000, max_bytes=64 * 1024, max_item_bytes=4096)
    for i in range(1_500):
        cache.put(f"{i}" + "x" * 3000, i, size=3000)
    assert cache.size_bytes <= 64 * 1024
    assert len(cache) <= 64 * 1024 // 3000


def test_oversized_items_are_not_stored() -> None:
    cache: BoundedCache[str, int] = BoundedCache(10, max_bytes=10_000, max_item_bytes=1000)
    assert cache.put("big", 1, size=65536) is False
    assert cache.get("big") is None
    assert cache.size_bytes == 0


def test_replacing_a_key_keeps_the_accounting_right() -> None:
    cache: BoundedCache[str, int] = BoundedCache(10, max_bytes=100_000)
    cache.put("a", 1, size=500)
    cache.put("a", 2, size=100)
    assert cache.get("a") == 2
    assert cache.size_bytes == 200  # 100 + fixed overhead
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0


def test_rejects_an_empty_budget() -> None:
    with pytest.raises(ValueError):
        BoundedCache(0)
