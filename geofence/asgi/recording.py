"""The one seam through which every recorded decision passes: counters, the decision log line, the app's hook.

The middleware (and a per-endpoint helper enforcing a class the code demands) calls
:meth:`DecisionRecorder.decided` once per decision: denials and report-mode would-be denials are counted, logged
and audited; allowed decisions go to the audit trail when ``[audit] include`` asks for them. The log
line names the *resolved* client (its network and country), not the proxy it came through, and escapes every
control character in client-supplied text, so a path with CR/LF cannot forge a second log line.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any, Final, Protocol

from ..evidence.audit import AuditWriter
from ..evidence.metrics import Metrics
from ..policy.decision import AUDIT_UNAVAILABLE, Decision, error_decision
from ..policy.load import Policy
from ..request.ids import pending_id, request_id

__all__ = ["DecisionRecorder", "Sinks", "printable"]

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


class Sinks(Protocol):
    """What the recorder reads from the loaded state (:class:`geofence.asgi.state.State` provides it)."""

    policy: Policy
    metrics: Metrics | None
    audit: AuditWriter | None
    restricting: frozenset[str]
    audited: frozenset[str]


class DecisionRecorder:
    """Counts, logs and hands on recorded decisions (denials and report-mode would-be denials)."""

    def __init__(self, on_decision: Callable[[Decision, MutableMapping[str, Any]], None] | None = None) -> None:
        self.on_decision = on_decision
        self.stats: Counter[tuple[str, str, str]] = Counter()
        """By (outcome, export class, reason code)."""

    def decided(
        self, decision: Decision, scope: MutableMapping[str, Any], sinks: Sinks, client: str | None
    ) -> Decision:
        """Record *decision* as the policy asks and return the decision to act on: under ``[audit] on_failure =
        "deny"``, an allowed decision that could not be recorded becomes a 503 ``audit_unavailable``."""
        if decision.allowed:
            if decision.reasons and decision.would_deny:
                self.record("would_deny", decision, scope, sinks, client)
                return decision
            audit = sinks.audit
            if (
                decision.export_class not in sinks.audited
                or self.allowed(decision, scope, sinks, client)
                or audit is None
                or audit.on_failure != "deny"
            ):
                return decision
            detail = "audit record could not be queued (on_failure = deny)"  # not recorded: not served
            decision = error_decision(sinks.policy, decision.export_class, detail, code=AUDIT_UNAVAILABLE)
        self.record("deny", decision, scope, sinks, client)
        return decision

    def allowed(self, decision: Decision, scope: MutableMapping[str, Any], sinks: Sinks, client: str | None) -> bool:
        """An allowed decision: only the audit trail may want it (``include``), and cheaply — this is the
        request path of every served request on a controlled class. False when the record could not be queued."""
        if sinks.audit is None:  # the caller checked [audit] include (State.audited)
            return True
        # The id when fixed already, else a RequestId the writer thread fixes off the request path (a helper
        # that records this request later fixes the same one).
        return sinks.audit.submit("allow", decision, pending_id(scope), client)

    def record(
        self, outcome: str, decision: Decision, scope: MutableMapping[str, Any], sinks: Sinks, client: str | None
    ) -> None:
        """Count, log (``[logging] format``: key=value or JSON), audit and hand on one denial or report-mode
        would-be denial."""
        for reason in decision.reasons:
            self.stats[(outcome, decision.export_class, reason.code)] += 1
        rid = request_id(scope)
        if sinks.audit is not None:
            sinks.audit.submit(outcome, decision, rid, client)
        if sinks.metrics is not None:
            sinks.metrics.record(outcome, decision.export_class, (r.code for r in decision.reasons))
            if sinks.audit is not None:
                sinks.metrics.audit(sinks.audit)
        fmt = sinks.policy.log_format
        location = decision.location
        network = location.network if location is not None else None
        country = location.country if location is not None else None
        method, path = scope.get("method", "WEBSOCKET"), scope.get("path")
        codes = [r.code for r in decision.reasons]
        if fmt == "json":  # json.dumps escapes every control and non-ASCII character: one line, always
            fields = {"event": outcome, "request_id": rid, "method": str(method)[:20], "path": str(path)[:_MAX_LOGGED],
                      "client_network": network, "country": country, "class": decision.export_class,
                      "status": decision.status, "reasons": codes, "policy": decision.policy_version}  # fmt: skip
            decisions_log.info("%s", json.dumps(fields))
        else:
            decisions_log.info(
                '%s %s "%s" client=%s class=%s status=%s reasons=%s policy=%s request_id=%s',
                outcome,
                printable(method, 20),
                printable(path),
                f"{network} {country or '-'}" if location is not None else "unknown",
                printable(decision.export_class, 40),
                decision.status,
                ",".join(codes),
                decision.policy_version,
                rid,
            )
        if self.on_decision is not None:
            try:
                self.on_decision(decision, scope)
            except Exception:
                log.exception("geofence: on_decision hook failed")
