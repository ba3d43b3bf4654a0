"""The health endpoint (``[health] path``): is this process able to decide, on what data, since when.

Answered by the middleware itself — never passed to the app, never decided — so a load balancer or a
Kubernetes probe sees geofence's own state: 200 when ready; 503 when it is not (no valid policy, or a stale
database under ``on_stale = "deny"``), with the reason.
"""

from __future__ import annotations

from typing import Any

from ..evidence.freshness import database_report
from ..native import describe
from .reloader import Reloader
from .state import State

__all__ = ["health_report"]


def health_report(state: State | None, live: Reloader, now: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for the health endpoint."""
    if state is None:
        return 503, {"status": "unavailable", "error": live.startup_error, "last_reload": live.last_reload}
    policy = state.policy
    databases = database_report((db.info for db in state.locator.databases), policy.max_age_days, now)
    stale = not all(db["fresh"] for db in databases)
    audit = state.audit
    ready = not (stale and policy.on_stale == "deny") and not (audit is not None and audit.failing)
    body = {
        "status": "unavailable" if not ready else ("stale" if stale else "ok"),
        "policy_version": policy.version,
        "databases": databases,
        "on_stale": policy.on_stale,
        "request_path": describe() if state.resolver is not None else "pure Python (no database mapped natively)",
        "reloads": dict(live.reloads),
        "last_reload": live.last_reload,
        "audit": None if audit is None else {**audit.counters(), "healthy": audit.healthy, "failing": audit.failing},
    }
    return (200 if ready else 503), body
