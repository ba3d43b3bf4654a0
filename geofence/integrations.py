"""Per-endpoint requirements for Starlette and FastAPI apps behind :class:`GeofenceMiddleware`.

The middleware decides each request by its route rules. These helpers let one endpoint demand a class in
code as well — re-deciding with the facts the middleware already gathered (no second lookup), so a route the
policy file forgot is still protected where the code says so. :func:`check_class`, :func:`enforce_class`
and :func:`denial_parts` are framework-neutral: ``geofence.litestar`` and ``geofence.django`` build on them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from .asgi import POLICY_VIOLATION
from .decision import EXEMPT, LOCATION_UNKNOWN, Decision, decide, error_decision
from .middleware import CLIENT_KEY, MIDDLEWARE_KEY, POLICY_KEY, STATE_KEY

__all__ = [
    "GeofenceDenied",
    "check_class",
    "denial_parts",
    "enforce_class",
    "install_handler",
    "require_class",
    "requires_class",
]

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


def require_class(export_class: str) -> Callable[..., Decision]:
    """A FastAPI dependency: ``@app.get("/weights", dependencies=[Depends(require_class("4E091"))])``.

    Returns the decision when allowed; otherwise raises :class:`GeofenceDenied`, which
    :func:`install_handler` turns into the standard 451 / 401 / 503 response. On a WebSocket route a denied
    handshake is closed with code 1008 before it is accepted (FastAPI sends no exception handler's response
    there).
    """
    from starlette.exceptions import WebSocketException
    from starlette.requests import HTTPConnection

    def dependency(connection: HTTPConnection) -> Decision:
        decision = enforce_class(connection.scope, export_class)
        if not decision.allowed:
            if connection.scope["type"] == "websocket":
                raise WebSocketException(code=POLICY_VIOLATION, reason="policy violation")
            raise GeofenceDenied(decision)
        return decision

    # FastAPI reads annotations at run time; with postponed evaluation they are strings naming a local import.
    dependency.__annotations__ = {"connection": HTTPConnection, "return": Decision}
    return dependency


def requires_class(export_class: str) -> Callable[[F], F]:
    """A decorator for Starlette endpoints ``async def endpoint(request)`` (or ``(websocket)``): deny unless
    *export_class* is allowed. A denied WebSocket gets the denial as its handshake's HTTP response where the
    server supports that, else a close with code 1008, before it is accepted."""
    from starlette.requests import HTTPConnection
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    def decorate(endpoint: F) -> F:
        @functools.wraps(endpoint)
        async def wrapper(connection: HTTPConnection, *args: Any, **kwargs: Any) -> Any:
            decision = enforce_class(connection.scope, export_class)
            if decision.allowed:
                return await endpoint(connection, *args, **kwargs)
            if not isinstance(connection, WebSocket):
                return _response(decision, connection, Response)
            if "websocket.http.response" in connection.scope.get("extensions", {}):
                await connection.send_denial_response(_response(decision, connection, Response))
            else:
                await connection.close(code=POLICY_VIOLATION, reason="policy violation")
            return None

        return wrapper  # type: ignore[return-value]

    return decorate


def install_handler(app: Any) -> None:
    """Register the :class:`GeofenceDenied` handler on a Starlette or FastAPI *app*."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GeofenceDenied)
        response: Response = _response(exc.decision, request, Response)
        return response

    app.add_exception_handler(GeofenceDenied, handler)


def denial_parts(decision: Decision, scope: MutableMapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """The middleware's own denial of *decision* (same headers, body and custom hook) as status, headers and
    body for a framework's response class; ``content-length`` is left out, as each framework sets its own."""
    middleware = (scope.get("state") or {}).get(MIDDLEWARE_KEY)
    if middleware is None:
        raise RuntimeError(_NO_MIDDLEWARE)
    denial = middleware.denial(decision, scope)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in denial.headers if k.lower() != b"content-length"]
    return denial.status, headers, denial.body


def _response(decision: Decision, request: Any, response_class: Any) -> Any:
    """The middleware's own denial as a Starlette response."""
    status, headers, body = denial_parts(decision, request.scope)
    return response_class(body, status_code=status, headers=dict(headers))
