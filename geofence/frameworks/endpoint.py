"""Per-endpoint requirements, framework-neutral: what every helper in this package builds on.

The middleware decides each request by its route rules. The helpers let one endpoint demand a class in
code as well — re-deciding with the facts the middleware already gathered (no second lookup), so a route the
policy file forgot is still protected where the code says so. :func:`check_class` asks, :func:`enforce_class`
enforces (and records), :func:`denial_parts` renders the middleware's own denial for a framework's response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from ..asgi.middleware import CLIENT_KEY, MIDDLEWARE_KEY, POLICY_KEY, STATE_KEY
from ..policy.decision import EXEMPT, LOCATION_UNKNOWN, Decision, decide, error_decision

__all__ = ["GeofenceDenied", "check_class", "denial_parts", "enforce_class"]

_NO_MIDDLEWARE = "GeofenceMiddleware must run before a geofence endpoint requirement"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class GeofenceDenied(Exception):
    """Raised by :func:`require_class` when the endpoint's class is denied; carries the decision."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.status} {decision.export_class}")
        self.decision = decision


def check_class(scope: MutableMapping[str, Any], export_class: str) -> Decision:
    """Decide *export_class* for the request in *scope*, from the middleware's facts; fail closed without them."""
    state = scope.get("state") or {}
    current: Decision | None = state.get(STATE_KEY)
    policy = state.get(POLICY_KEY)
    if current is None or policy is None:
        raise RuntimeError(_NO_MIDDLEWARE)
    if export_class not in policy.classes:
        return error_decision(policy, export_class, f"unknown class {export_class!r}", current.location)
    # The client's own facts carry over: its exempt network (an exempt *path* exempts the route, not a class
    # the code demands) and a broken proxy chain, which the route's class may not have cared about.
    where = state.get(CLIENT_KEY)
    exempt = where.exempt if where is not None else None
    if current.export_class == export_class and (exempt is not None or all(r.code != EXEMPT for r in current.reasons)):
        return current
    client_problem = where.problem if where is not None and where.broken else None
    identity = current.identity
    problem = next((r.detail for r in current.reasons if r.code == "identity_invalid"), None)
    middleware = state.get(MIDDLEWARE_KEY)
    if identity is None and problem is None and middleware is not None:
        # The route's own class needed no identity, so the middleware did not read one: read it now.
        identity, problem = middleware.identity_of(scope)
    location_problem = next((r.detail for r in current.reasons if r.code == LOCATION_UNKNOWN), None)
    return decide(
        policy, export_class, current.location, identity,
        identity_problem=problem, location_problem=location_problem, client_problem=client_problem, exempt=exempt,
    )  # fmt: skip


def enforce_class(scope: MutableMapping[str, Any], export_class: str) -> Decision:
    """:func:`check_class`, as a helper enforcing it: the decision is recorded like the middleware's own (log,
    audit trail, ``on_decision``, counters) and an allowed response is marked ``Cache-Control: private`` when
    the class can deny anyone. (:func:`check_class` alone only asks: nothing is recorded.)"""
    decision = check_class(scope, export_class)
    middleware = (scope.get("state") or {}).get(MIDDLEWARE_KEY)
    return middleware.enforced(decision, scope) if middleware is not None else decision


def denial_parts(decision: Decision, scope: MutableMapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """The middleware's own denial of *decision* (same headers, body and custom hook) as status, headers and
    body for a framework's response class; ``content-length`` is left out, as each framework sets its own."""
    middleware = (scope.get("state") or {}).get(MIDDLEWARE_KEY)
    if middleware is None:
        raise RuntimeError(_NO_MIDDLEWARE)
    denial = middleware.denial(decision, scope)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in denial.headers if k.lower() != b"content-length"]
    return denial.status, headers, denial.body
