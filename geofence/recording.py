"""The one seam through which every recorded decision passes: counters, the decision log line, the app's hook.

The middleware calls :meth:`DecisionRecorder.record` once per denial or report-mode would-be denial. The log
line names the *resolved* client (its network and country), not the proxy it came through, and escapes every
control character in client-supplied text, so a path with CR/LF cannot forge a second log line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any, Final

from .decision import Decision

__all__ = ["DecisionRecorder", "printable"]

decisions_log = logging.getLogger("geofence.decision")
log = logging.getLogger("geofence")

_MAX_LOGGED: Final = 200


def printable(text: object, limit: int = _MAX_LOGGED) -> str:
    """*text* safe for a one-line log, inside double quotes: every character Python does not call printable
    (CR, LF, NUL, ESC, NEL, U+2028, bidi overrides such as U+202E...), backslashes and quotes escaped, long
    values cut — so client-supplied text can neither split a log line, nor end its quoted field early, nor
    reorder what a terminal shows, nor flood the log."""
    value = str(text)
    cut = value[:limit]
    if not cut.isprintable() or '"' in cut or "\\" in cut:
        cut = "".join(c if c.isprintable() and c not in '"\\' else _escape(c) for c in cut)
    return cut + "..." if len(value) > limit else cut


def _escape(char: str) -> str:
    code = ord(char)
    if char in '"\\':
        return "\\" + char
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class DecisionRecorder:
    """Counts, logs and hands on recorded decisions (denials and report-mode would-be denials)."""

    def __init__(self, on_decision: Callable[[Decision, MutableMapping[str, Any]], None] | None = None) -> None:
        self.on_decision = on_decision
        self.stats: Counter[tuple[str, str, str]] = Counter()
        """By (outcome, export class, reason code)."""

    def record(self, outcome: str, decision: Decision, scope: MutableMapping[str, Any]) -> None:
        for reason in decision.reasons:
            self.stats[(outcome, decision.export_class, reason.code)] += 1
        location = decision.location
        client = f"{location.network} {location.country or '-'}" if location is not None else "unknown"
        decisions_log.info(
            '%s %s "%s" client=%s class=%s status=%s reasons=%s policy=%s',
            outcome,
            printable(scope.get("method", "WEBSOCKET"), 20),
            printable(scope.get("path")),
            client,
            printable(decision.export_class, 40),
            decision.status,
            ",".join(r.code for r in decision.reasons),
            decision.policy_version,
        )
        if self.on_decision is not None:
            try:
                self.on_decision(decision, scope)
            except Exception:
                log.exception("geofence: on_decision hook failed")
