"""Prometheus metrics (``[metrics] enabled = true``, extra ``geofence[prometheus]``).

The metrics live in ``prometheus_client``'s default registry, so an app exposes them the standard way
(``app.mount("/metrics", prometheus_client.make_asgi_app())``), and its multiprocess mode works under several
workers (set ``PROMETHEUS_MULTIPROC_DIR`` before the app starts, as prometheus_client documents).

The request path stays cheap: a prometheus counter takes a lock (~0.2 µs), so the warm path only bumps a plain
integer, and the count is handed to prometheus on the next cache miss, recorded decision or reload (at most a
few hundred requests late). Decisions are timed only when computed (a cache miss); a cached answer is a
dictionary lookup. Without the setting, ``prometheus_client`` is never imported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ..geoip.location import DatabaseInfo

if TYPE_CHECKING:
    from .audit import AuditWriter

__all__ = ["Metrics", "metrics"]

_FLUSH_EVERY: Final = 256

_instance: Metrics | None = None
_lock = threading.Lock()


def metrics() -> Metrics:
    """The process's metrics, registered once (several middleware instances share them)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Metrics()
        return _instance


class Metrics:
    """The geofence metric families; see README "Metrics" for each one."""

    def __init__(self) -> None:
        try:
            from prometheus_client import Counter, Gauge, Histogram
        except ImportError:
            from ..errors import GeofenceError

            raise GeofenceError(
                "[metrics] enabled = true needs prometheus_client: pip install 'geofence[prometheus]'"
            ) from None
        self.requests = Counter("geofence_requests_total", "Requests decided (HTTP and WebSocket handshakes).")
        self.decisions = Counter(
            "geofence_decisions_total",
            "Denials and report-mode would-be denials, by export class, outcome and reason code.",
            ["export_class", "outcome", "reason"],
        )
        self.misses = Counter(
            "geofence_cache_misses_total",
            "Requests the front cache could not answer (hits = geofence_requests_total minus these).",
        )
        self.latency = Histogram(
            "geofence_decision_seconds",
            "Time to decide a request that missed the front cache (route, client, location, identity).",
            buckets=(2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 2e-2, 0.1),
        )
        self.reloads = Counter("geofence_reloads_total", "Policy and database reloads, by result.", ["result"])
        self.build_time = Gauge(
            "geofence_database_build_timestamp_seconds",
            "Build time of each loaded database (age = time() - this).",
            ["path"],
            multiprocess_mode="min",
        )
        self.audit_depth = Gauge(
            "geofence_audit_queue_depth", "Audit records waiting for the writer thread.", multiprocess_mode="livesum"
        )
        self.audit_lost = Counter(
            "geofence_audit_failures_total", "Audit records dropped (queue full) and write errors.", ["kind"]
        )
        self._audit_seen: dict[tuple[str, str], int] = {}
        """Per (writer chain, kind): what was already counted, so a new writer's failures are not hidden."""
        self.pending = 0
        """Requests counted on the warm path, not yet handed to :attr:`requests`."""

    def flush(self) -> None:
        """Hand the warm path's plain count to prometheus (called off the warm path)."""
        pending, self.pending = self.pending, 0
        if pending:
            self.requests.inc(pending)

    def miss(self, seconds: float) -> None:
        self.misses.inc()
        self.latency.observe(seconds)
        if self.pending >= _FLUSH_EVERY:
            self.flush()

    def record(self, outcome: str, export_class: str, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.decisions.labels(export_class, outcome, reason).inc()
        self.flush()

    def audit(self, writer: AuditWriter) -> None:
        """Copy the audit writer's queue depth and failure counts (called on misses and denials)."""
        counts = writer.counters()
        self.audit_depth.set(counts["queue_depth"])
        for kind in ("dropped", "errors"):
            new = counts[kind] - self._audit_seen.get((writer.chain, kind), 0)
            if new > 0:
                self.audit_lost.labels(kind).inc(new)
                self._audit_seen[(writer.chain, kind)] = counts[kind]

    def loaded(self, ok: bool, databases: Iterable[DatabaseInfo] = ()) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()
        for info in databases:
            self.build_time.labels(info.path).set(info.build_epoch)
        self.flush()

    def sample(self) -> dict[str, Any]:
        """Current values from the default registry (for tests and the health report)."""
        from prometheus_client import REGISTRY

        return {
            sample.name + (str(sorted(sample.labels.items())) if sample.labels else ""): sample.value
            for family in REGISTRY.collect()
            if family.name.startswith("geofence_")
            for sample in family.samples
        }
