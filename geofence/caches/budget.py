"""How much memory geofence's caches may hold: one number, ``[cache] max_mb``, shared among them.

Every cache on the request path is bounded (see caches/bounded.py); this module sizes them from one budget so an
operator sets a single figure per worker process and the README can state it in megabytes. The shares and the
bytes per entry were measured (RSS growth while filling each cache with distinct clients on CPython 3.11, see
``benchmarks/``): they are what an entry really costs, dict slots and small objects included, not what its
text adds up to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .bounded import BoundedCache

__all__ = ["DEFAULT_CACHE_MB", "MIN_CACHE_MB", "CacheBudget"]

DEFAULT_CACHE_MB: Final = 64
MIN_CACHE_MB: Final = 4
_MB: Final = 1 << 20

# (share of the budget, bytes one entry really costs)
_CLIENTS: Final = (0.38, 400)  # peer (+ trusted forwarding headers) -> packed client: strings in three dicts
_NETWORKS: Final = (0.27, 320)  # network -> "facts network": a 128-bit int key, a string, ring and bucket slots
_FRONT: Final = (0.08, 1300)  # request -> built route, location, decision: the few objects the GC walks
_FRONT_MAX: Final = 4096  # built objects are walked by every full collection: keep them few whatever the budget
_IDENTITIES: Final = (0.18, 1100)  # token digest -> verified identity (~10,000 at the default budget)
_SMALL: Final = 0.02  # each of: decisions per answer, trusted peers, rejected tokens, route memo


@dataclass(frozen=True)
class CacheBudget:
    """The caches' share of ``max_mb`` megabytes (per process)."""

    max_mb: int = DEFAULT_CACHE_MB

    @property
    def total_bytes(self) -> int:
        return self.max_mb * _MB

    def _share(self, share: float) -> int:
        return int(self.total_bytes * share)

    def _entries(self, part: tuple[float, int]) -> int:
        return max(64, self._share(part[0]) // part[1])

    @property
    def networks(self) -> int:
        """Entries of the locator's network cache (``[geoip] cache_size`` overrides it)."""
        return self._entries(_NETWORKS)

    def clients(self) -> BoundedCache[str, str]:
        return BoundedCache(self._entries(_CLIENTS), self._share(_CLIENTS[0]))

    def front(self) -> BoundedCache[tuple[object, ...], object]:
        return BoundedCache(min(_FRONT_MAX, self._entries(_FRONT)), self._share(_FRONT[0]))

    def identities(self) -> tuple[int, int]:
        """(entries, bytes) of the verified-identity cache."""
        return self._entries(_IDENTITIES), self._share(_IDENTITIES[0])

    def small(self, entries: int) -> tuple[int, int]:
        """(entries, bytes) of one of the small caches: at most *entries*, within its share."""
        share = self._share(_SMALL)
        return max(64, min(entries, share // 512)), share
