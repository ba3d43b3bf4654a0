"""The bounded cache: entry and byte budgets, second-chance eviction that keeps the hot set."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.caches.bounded import BoundedCache
from geofence.policy.load import PolicyError, parse_policy


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


def _consistent(cache: BoundedCache[object, object]) -> None:
    data, meta, at = cache._data, cache._meta, cache._at
    assert len(data) <= cache.max_entries and cache.size_bytes <= cache.max_bytes
    assert set(data) == set(meta) and len(at) == len(data)
    assert cache.size_bytes == sum(packed & 0xFFFFFFFF for packed in meta.values())
    for key, packed in meta.items():
        assert at[packed >> 32] == key
    assert len(cache._free) + len(data) == len(cache._used)


@given(st.lists(st.tuples(st.sampled_from(["get", "put"]), st.integers(0, 40), st.integers(0, 900)), max_size=300))
def test_accounting_stays_exact_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    cache: BoundedCache[object, object] = BoundedCache(16, max_bytes=4000, max_item_bytes=1000)
    model: dict[object, object] = {}
    for op, key, size in ops:
        if op == "put":
            if cache.put(key, (key, size), size):
                model[key] = (key, size)
        else:
            found = cache.get(key)
            assert found is None or found == model[key]  # never a wrong value, only a miss
        _consistent(cache)


def test_a_cache_of_atoms_is_invisible_to_the_garbage_collector() -> None:
    """A full collection visits every reference a tracked container holds (a cache miss each, in a large heap):
    a cache of strings and numbers must not be tracked at all, however large."""
    cache: BoundedCache[str, str] = BoundedCache(10_000, max_bytes=1 << 30)
    for i in range(20_000):
        cache.put(f"203.0.113.{i}", f"{i} 8.8.8.0/24")
    assert len(cache) == 10_000
    parts = (cache._data, cache._meta, cache._at, cache._used)
    assert not any(gc.is_tracked(part) for part in parts)
    assert gc.get_referents(cache._free) == [type(cache._free)]  # machine integers: only its type to visit


def test_threads_sharing_a_cache_keep_it_consistent() -> None:
    cache: BoundedCache[object, object] = BoundedCache(64, max_bytes=1 << 20)

    def work(offset: int) -> None:
        for i in range(5_000):
            cache.put((offset, i % 200), i)
            cache.get((offset, (i * 7) % 200))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _consistent(cache)  # type: ignore[arg-type]


def test_the_budget_sizes_every_request_path_cache(country_db: Path) -> None:
    """``[cache] max_mb`` is one figure per process: each cache's bytes fit in it, and they scale with it."""
    small = GeofenceMiddleware(_App(), config={**_POLICY(country_db), "cache": {"max_mb": 8}})
    large = GeofenceMiddleware(_App(), config={**_POLICY(country_db), "cache": {"max_mb": 256}})
    for middleware, mb in ((small, 8), (large, 256)):
        state = middleware._live.state
        assert state is not None and middleware.cache_budget_bytes == mb << 20
        caches = (state.clients, state.front, state.decisions, state.peers)
        assert sum(cache.max_bytes for cache in caches) < mb << 20
        assert state.front.max_entries <= 4096  # built objects stay few, whatever the budget
    small_state, large_state = small._live.state, large._live.state
    assert small_state is not None and large_state is not None
    assert large_state.clients.max_entries // small_state.clients.max_entries == 32
    assert large_state.locator._cache.maxsize // small_state.locator._cache.maxsize == 32


@pytest.mark.parametrize("value", [0, 3, -1, "64", 1.5, True])
def test_a_budget_below_the_minimum_or_not_an_integer_is_refused(value: object) -> None:
    with pytest.raises(PolicyError, match=r"cache\.max_mb"):
        parse_policy({"classes": {"EAR99": {}}, "cache": {"max_mb": value}})


class _App:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        pass


def _POLICY(database: Path) -> dict[str, object]:
    return {"geoip": {"databases": [str(database)]}, "classes": {"EAR99": {}}}
