"""``[audit]`` in the policy file: where decision records go and which (see README "Audit trail")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import Checker

__all__ = ["AuditConfig", "audit_config"]


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: where decision records go and which (see README "Audit trail")."""

    path: str | None = None
    logger: str | None = None
    include: str = "controlled"  # "controlled" | "denials" | "all"
    full_ip: bool = False
    key_env: str | None = None
    max_bytes: int | None = 100 * 1024 * 1024
    daily: bool = False
    on_failure: str = "log"  # "log" | "deny"


def audit_config(raw: Any, base_dir: Path | None, check: Checker) -> AuditConfig | None:
    """The validated ``[audit]`` table, or None when the policy has none."""
    keys = ("path", "logger", "include", "full_ip", "key_env", "max_bytes", "daily", "on_failure")
    table = check.table(raw, "audit", keys)
    if not table:
        return None
    path = check.string(table.get("path"), "audit.path")
    logger = check.string(table.get("logger"), "audit.logger")
    if (path is None) == (logger is None):
        check.error("audit", "give path (a file) or logger (a logging logger name), one of them")
    if path is not None and base_dir is not None and not Path(path).is_absolute():
        path = str(base_dir / path)
    flags = {}
    for key in ("full_ip", "daily"):
        flags[key] = table.get(key, False)
        if not isinstance(flags[key], bool):
            check.error(f"audit.{key}", "must be true or false")
    return AuditConfig(
        path=path,
        logger=logger,
        include=check.string(table.get("include"), "audit.include", ("controlled", "denials", "all")) or "controlled",
        full_ip=flags["full_ip"] is True,
        key_env=check.string(table.get("key_env"), "audit.key_env"),
        max_bytes=check.integer(table.get("max_bytes"), "audit.max_bytes") or 100 * 1024 * 1024,
        daily=flags["daily"] is True,
        on_failure=check.string(table.get("on_failure"), "audit.on_failure", ("log", "deny")) or "log",
    )
