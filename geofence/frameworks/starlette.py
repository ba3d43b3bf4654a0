"""Per-endpoint requirements for Starlette and FastAPI apps behind :class:`GeofenceMiddleware`: a FastAPI
dependency, a Starlette endpoint decorator, and the exception handler that renders a denial."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..asgi.plumbing import POLICY_VIOLATION
from ..policy.decision import Decision
from .endpoint import GeofenceDenied, denial_parts, enforce_class

__all__ = ["install_handler", "require_class", "requires_class"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


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


def _response(decision: Decision, request: Any, response_class: Any) -> Any:
    """The middleware's own denial as a Starlette response."""
    status, headers, body = denial_parts(decision, request.scope)
    return response_class(body, status_code=status, headers=dict(headers))
