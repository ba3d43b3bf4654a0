"""The state in force, and the background thread that keeps it current.

A policy file, the databases it names and the key files are watched (inode, size, mtime); a change is loaded
and validated in full, then swapped in with one reference assignment, so a request sees the old state or the
new, never a mix. An invalid change is logged and the old state kept. An invalid state at start is not an
exception — Starlette builds middleware lazily, inside the server — but ``state = None`` with a one-line
``startup_error``: the middleware then refuses to serve, and a fixed file starts the service without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ..errors import GeofenceError
from ..policy.decision import Decision
from ..policy.load import Policy
from .responses import DenialResponse
from .state import State, build_state, signature

__all__ = ["Reloader"]

log = logging.getLogger("geofence")


class Reloader:
    """Holds the :class:`State` in force for one middleware; see the module docstring."""

    def __init__(
        self,
        config: str | os.PathLike[str] | Policy | Mapping[str, Any] | None,
        deny_hook: Callable[[Decision, MutableMapping[str, Any]], DenialResponse | None] | None,
        *,
        watch: bool | None = None,
        interval: float = 2.0,
    ) -> None:
        self._config = config
        self._path = Path(config) if isinstance(config, str | os.PathLike) else None
        self._deny_hook = deny_hook
        if watch is None:
            watch = self._path is not None
        if watch and self._path is None:
            raise GeofenceError("reload needs a policy file path")
        self.state: State | None = None
        self.startup_error: str | None = None
        self.reloads = {"ok": 0, "refused": 0}
        """Swaps done and refused since start (a refused one leaves the old state in force)."""
        self.last_reload: dict[str, Any] | None = None
        """The last reload attempt: ``time`` (UNIX), ``ok``, ``error`` (one line) — for the health endpoint."""
        seen = signature(self._path, None)  # before loading: a change during the load is not missed
        try:
            self.state = self._build()
            seen = self.state.signature
            if self.state.metrics is not None:
                self.state.metrics.loaded(True, (db.info for db in self.state.locator.databases))
        except Exception as exc:
            self.startup_error = f"geofence: invalid configuration, refusing to serve: {_one_line(exc)}"
            log.error("%s", self.startup_error, exc_info=not isinstance(exc, GeofenceError))
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval, seen), name="geofence-reload", daemon=True
            )
            self._watcher.start()

    def _build(self) -> State:
        return build_state(self._config, self._path, self._deny_hook, self.state)

    def reload(self) -> bool:
        """Re-read the policy file and databases now; True if a new state was swapped in."""
        old = self.state
        kept = f"keeping policy {old.policy.version}" if old is not None else "still refusing to serve"
        try:
            state = self._build()
        except Exception as exc:  # never let a surprise kill the watcher: later valid edits must still apply
            self.reloads["refused"] += 1
            if old is not None and old.metrics is not None:
                old.metrics.loaded(False)
            self.last_reload = {"time": time.time(), "ok": False, "error": _one_line(exc)}
            if isinstance(exc, GeofenceError):
                log.error("geofence: %s: the new configuration is invalid: %s", kept, exc)
            else:
                log.exception("geofence: %s: could not load the new configuration", kept)
            return False
        self.state = state  # one reference assignment: requests see the old state or the new, never a mix
        if old is not None and old.audit is not None and old.audit is not state.audit:
            old.audit.close()  # records already queued are written first; the new writer starts a new chain
        self.reloads["ok"] += 1
        if state.metrics is not None:
            state.metrics.loaded(True, (db.info for db in state.locator.databases))
        self.last_reload = {"time": time.time(), "ok": True, "error": None}
        if old is None:
            log.warning("geofence: policy %s loaded; serving", state.policy.version)
            self.startup_error = None
            return True
        if state.policy.version != old.policy.version:
            log.warning("geofence: policy %s replaced by %s", old.policy.version, state.policy.version)
        for change in _database_changes(old, state):
            log.warning("geofence: %s", change)
        # The old readers are not closed here: a request may still be using them. They close when unreferenced.
        return True

    def _watch(self, interval: float, seen: tuple[Any, ...]) -> None:
        while not self._stop.wait(interval):
            state = self.state
            current = signature(self._path, state.policy if state is not None else None)
            if current != seen:  # a failed reload is not retried until the files change again
                seen = current
                self.reload()

    def close(self) -> None:
        """Stop watching for changes, and write what the audit trail still holds."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.state is not None and self.state.audit is not None:
            self.state.audit.close()


def _database_changes(old: State, new: State) -> list[str]:
    """``path: built 2026-05-01 -> 2026-06-01`` for each database whose build changed (or that came or went)."""
    before = {db.info.path: db.info for db in old.locator.databases}
    after = {db.info.path: db.info for db in new.locator.databases}
    changes = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path), after.get(path)
        if was is None or now is None or was.build_epoch != now.build_epoch:
            shown = [info.build_date.isoformat() if info else "none" for info in (was, now)]
            changes.append(f"database {path}: built {shown[0]} -> {shown[1]}")
    return changes


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."
