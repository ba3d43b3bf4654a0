"""ASGI plumbing around a decision: send a denial, buffer a body for classification, mark responses private,
refuse a server start with a broken policy, and end a WebSocket when the identity that allowed it expires.

None of this decides anything; it is the "action" end of the data flow, kept apart so the middleware stays glue.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Final

from ..native import core
from .responses import DenialResponse

__all__ = [
    "Deadline",
    "Marks",
    "buffer_body",
    "expiring_websocket",
    "header",
    "private_cache_control",
    "private_responses",
    "private_when",
    "refuse_lifespan",
    "send_denial",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PRIVATE: Final = (b"cache-control", b"private")
POLICY_VIOLATION: Final = 1008  # RFC 6455 close code


def header(scope: Scope, name: bytes) -> str:
    """The first value of header *name* (lower-case), or ""."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def send_denial(scope: Scope, receive: Receive, send: Send, response: DenialResponse) -> None:
    """Answer a denied HTTP request or WebSocket handshake with *response*; the app never sees it."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": response.status, "headers": list(response.headers)})
        body = b"" if scope.get("method") == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
        return
    # A WebSocket is refused before it is accepted: an HTTP response where the server supports the
    # WebSocket Denial Response extension, else a close with 1008.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": response.status, "headers": list(response.headers)}
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "policy violation"})


async def send_json(scope: Scope, send: Send, status: int, body: object) -> None:
    """A small JSON response geofence answers itself (the health endpoint): never cached, never the app's."""
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
               (b"content-length", str(len(payload)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else payload})


async def refuse_lifespan(receive: Receive, send: Send, reason: str) -> None:
    """Answer the server's lifespan protocol with ``startup.failed``: a server must not serve a broken policy."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": reason})
            return
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def private_responses(send: Send) -> Send:
    """Mark the app's response ``Cache-Control: private``: it was decided for this caller, so a shared cache
    (a CDN in front of the app) must not replay it to someone the policy would refuse.

    A partial of a plain function that returns *send*'s own awaitable: no coroutine frame and no bound method
    of ours per message, on every allowed GET of a controlled class (measured: ~1,300 instructions a request
    less than a class with ``__call__``). The native path's ``private_send`` is that partial in C: it marks the
    plain case itself and hands the reference the rest."""
    if core is not None:
        return core.private_send(_send_private, send)  # type: ignore[no-any-return]
    return partial(_send_private, send)


def _send_private(send: Send, message: Message) -> Awaitable[None]:
    if message["type"] == "http.response.start":
        headers = message.get("headers") or ()
        for name, _ in headers:
            if len(name) in _CACHE_HEADER_LENGTHS and name.lower() in _CACHE_HEADERS:
                message["headers"] = _make_private(headers)
                break
        else:
            message["headers"] = [*headers, _PRIVATE]
    return send(message)


class Marks:
    """Classes per-endpoint helpers allowed for one request that make its response private, and whether the
    response has started (then it is too late to mark it)."""

    __slots__ = ("classes", "started")

    def __init__(self) -> None:
        self.classes: list[str] = []
        self.started = False


def private_when(marks: Marks, send: Send) -> Send:
    """Like :func:`private_responses`, but only if *marks* names a class when the response starts: a
    per-endpoint helper allowed a class that can deny anyone, after the route's own class needed no marking."""
    return partial(_send_private_when, marks, send)


def _send_private_when(marks: Marks, send: Send, message: Message) -> Awaitable[None]:
    if message["type"] == "http.response.start":
        marks.started = True
        if marks.classes:
            return _send_private(send, message)
    return send(message)


def _make_private(headers: Any) -> list[tuple[bytes, bytes]]:
    given = [bytes(v).decode("latin-1") for k, v in headers if bytes(k).lower() == b"cache-control"]
    value = private_cache_control(given)
    kept = [(k, v) for k, v in headers if bytes(k).lower() not in CDN_CACHE_HEADERS]
    if value is None:
        return kept
    return [*(h for h in kept if bytes(h[0]).lower() != b"cache-control"), (b"cache-control", value.encode("latin-1"))]


CDN_CACHE_HEADERS: Final = frozenset(
    {b"cdn-cache-control", b"cloudflare-cdn-cache-control", b"surrogate-control", b"x-accel-expires", b"edge-control"}
)
"""Headers a CDN or proxy cache obeys over ``Cache-Control`` (RFC 9213, Cloudflare, Fastly/Varnish, nginx,
Akamai): dropped from a private response."""
_CACHE_HEADERS: Final = CDN_CACHE_HEADERS | {b"cache-control"}
_CACHE_HEADER_LENGTHS: Final = frozenset(len(name) for name in _CACHE_HEADERS)
# One directive; a quoted value may hold commas. Possessive, and an unclosed quote runs to the end: linear time
# on any header value an app passes through.
_DIRECTIVE: Final = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*+(?:"|\\?\Z))+')


def private_cache_control(given: list[str]) -> str | None:
    """The ``Cache-Control`` value that makes a response with *given* values private: the app's directives
    but ``public`` / ``s-maxage``, after ``private``; None when it already is private or ``no-store``."""
    directives = [d.strip() for v in given for d in _DIRECTIVE.findall(v) if d.strip()]
    if any(d.lower() in ("private", "no-store") for d in directives):
        return None
    kept = [d for d in directives if d.split("=")[0].strip().lower() not in ("public", "s-maxage")]
    return ", ".join(["private", *kept])


async def buffer_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read the body up to *limit* bytes, and a receive that replays what was read, then continues.

    Returns None for the body when it is larger than *limit* (or the client left): the class then fails
    closed. Nothing is lost either way: the app still receives every byte the client sent.
    """
    messages: list[Message] = []
    size = 0
    complete = False
    while size <= limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = size <= limit
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request") if complete else None
    pending = iter(messages)

    async def replay() -> Message:
        for message in pending:
            return message
        return await receive()

    return body, replay


class Deadline:
    """When a WebSocket must end (UNIX time: a token's expiry plus any grace), or None for no limit yet: a
    per-endpoint helper that allows an identity class after the handshake sets or shortens it."""

    __slots__ = ("at",)

    def __init__(self, at: float | None = None) -> None:
        self.at = at

    def shorten(self, at: float) -> None:
        self.at = at if self.at is None else min(self.at, at)


def expiring_websocket(receive: Receive, send: Send, deadline: Deadline) -> tuple[Receive, Send]:
    """Wrap a WebSocket so it cannot outlive the identity that allowed it: at *deadline* (see
    :class:`Deadline`) the connection is closed with 1008, and the app is told it disconnected.

    Data only flows through ``receive`` and ``send``, so checking the deadline there (and waking a waiting
    ``receive`` at the deadline) is enough: an expired session can neither read nor write.
    """
    closed = False

    async def close() -> Message:
        nonlocal closed
        if not closed:
            closed = True
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "identity expired"})
        return {"type": "websocket.disconnect", "code": POLICY_VIOLATION}

    async def guarded_receive() -> Message:
        if deadline.at is None and not closed:
            message = await receive()
            if deadline.at is None or time.time() < deadline.at:
                return message
            return await close()  # a helper bound the session to an identity that expired meanwhile
        remaining = (deadline.at or 0.0) - time.time()
        if closed or remaining <= 0:
            return await close()
        try:
            return await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return await close()

    async def guarded_send(message: Message) -> None:
        if closed or (deadline.at is not None and time.time() >= deadline.at):
            await close()  # whatever the app meant to send, the session is over
            return
        await send(message)

    return guarded_receive, guarded_send
