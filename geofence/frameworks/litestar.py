"""Per-endpoint requirements for Litestar apps behind :class:`GeofenceMiddleware`: a guard.

``@get("/weights", guards=[require_class("4E091")])`` (or ``guards=`` on a router, controller or the app)
re-decides the request for that class from the facts the middleware already gathered, like
:func:`geofence.check_class`. A guard can only stop a handler by raising, and Litestar turns exceptions into
responses through its exception handlers, so a denial raises :class:`GeofenceDenied` and
:data:`exception_handlers` renders the middleware's own 451 / 401 / 503. The guard refuses to run without that
handler (500, with a message naming the fix) rather than let Litestar render a denial its own way.

Litestar sends WebSocket exceptions as a close, never through exception handlers: a denied WebSocket is refused
before it is accepted with close code 1008 (servers answer the handshake 403), as the middleware itself does on
servers without the WebSocket Denial Response extension.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import WebSocketException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ExceptionHandlersMap, Guard

from ..asgi.plumbing import POLICY_VIOLATION
from .endpoint import GeofenceDenied, denial_parts, enforce_class

__all__ = ["GeofenceDenied", "exception_handlers", "handle_denied", "require_class"]


def require_class(export_class: str) -> Guard:
    """A Litestar guard: deny the request (HTTP or WebSocket) unless *export_class* is allowed for its caller."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        scope: Any = connection.scope  # Litestar's TypedDict union; geofence reads it as a plain mapping
        websocket = scope["type"] == "websocket"
        if not websocket and GeofenceDenied not in handler.resolve_exception_handlers():
            raise RuntimeError(
                "geofence.litestar.require_class needs its exception handler: "
                "Litestar(..., exception_handlers=geofence.litestar.exception_handlers)"
            )
        decision = enforce_class(scope, export_class)
        if decision.allowed:
            return
        if websocket:
            raise WebSocketException(detail="policy violation", code=POLICY_VIOLATION)
        raise GeofenceDenied(decision)

    return guard


def handle_denied(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The Litestar exception handler for :class:`GeofenceDenied`: the middleware's own denial response."""
    assert isinstance(exc, GeofenceDenied)
    scope: Any = request.scope
    status, headers, body = denial_parts(exc.decision, scope)
    media_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    return Response(body, status_code=status, headers=dict(headers), media_type=media_type)


exception_handlers: Final[ExceptionHandlersMap] = {GeofenceDenied: handle_denied}
"""``Litestar(..., exception_handlers=exception_handlers)``; merge with your own as ``{**exception_handlers, ...}``."""
