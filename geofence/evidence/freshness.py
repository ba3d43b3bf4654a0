"""Database freshness: how old each GeoIP database is, and when the set becomes stale.

Country assignments move (networks are sold, re-routed, sanctioned regions change hands), so an old database
quietly gives wrong answers. ``[geoip] max_age_days`` bounds that: past it, geofence warns once, and with
``on_stale = "deny"`` refuses classes that restrict anyone (503 ``database_stale``) until fresh data arrives.
Age is measured from each database's own build date, not the file's mtime, which a copy resets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ..geoip.location import DatabaseInfo
from ..policy.decision import DATABASE_STALE, EXEMPT, Decision, error_decision
from ..policy.load import Policy

__all__ = ["DAY", "database_report", "stale_at", "stale_decision", "stale_message"]

DAY: Final = 86_400


def stale_at(infos: Iterable[DatabaseInfo], max_age_days: int | None) -> float | None:
    """The UNIX time at which the oldest database passes *max_age_days* (None: no limit configured)."""
    epochs = [info.build_epoch for info in infos]
    if max_age_days is None or not epochs:
        return None
    return float(min(epochs) + max_age_days * DAY)


def stale_message(infos: Iterable[DatabaseInfo], max_age_days: int | None, now: float) -> str | None:
    """Which databases are past *max_age_days* at *now*, as one line; None when all are fresh."""
    if max_age_days is None:
        return None
    old = [
        f"{info.path} (built {info.build_date.isoformat()}, {int((now - info.build_epoch) // DAY)} days old)"
        for info in infos
        if now - info.build_epoch > max_age_days * DAY
    ]
    return f"database older than max_age_days = {max_age_days}: {'; '.join(old)}" if old else None


def database_report(infos: Iterable[DatabaseInfo], max_age_days: int | None, now: float) -> list[dict[str, Any]]:
    """Each database's path, type, build date, age in days and freshness (for the health endpoint)."""
    return [
        {
            **info.as_dict(),
            "age_days": int((now - info.build_epoch) // DAY),
            "fresh": max_age_days is None or now - info.build_epoch <= max_age_days * DAY,
        }
        for info in infos
    ]


def stale_decision(policy: Policy, decision: Decision, detail: str) -> Decision:
    """*decision* under ``on_stale``: with ``"deny"``, what a restricting class would have allowed is refused
    (503 ``database_stale``), exemptions aside — old data cannot be trusted to say where a caller is."""
    if policy.on_stale != "deny" or not decision.allowed or any(r.code == EXEMPT for r in decision.reasons):
        return decision
    if not policy.classes[decision.export_class].restricted:
        return decision
    return error_decision(
        policy, decision.export_class, detail, decision.location, decision.identity, code=DATABASE_STALE
    )
