"""ASGI plumbing around a decision: send a denial, buffer a body for classification, mark responses private,
refuse a server start with a broken policy, and end a WebSocket when the identity that allowed it expires.

None of this decides anything; it is the "action" end of the data flow, kept apart so the middleware stays glue.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Final

from .responses import DenialResponse

__all__ = [
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
    less than a class with ``__call__``)."""
    return partial(_send_private, send)


def _send_private(send: Send, message: Message) -> Awaitable[None]:
    if message["type"] == "http.response.start":
        headers = message.get("headers") or ()
        for name, _ in headers:
            if len(name) == 13 and name.lower() == b"cache-control":
                message["headers"] = _make_private(headers)
                break
        else:
            message["headers"] = [*headers, _PRIVATE]
    return send(message)


def private_when(marks: list[str], send: Send) -> Send:
    """Like :func:`private_responses`, but only if *marks* is non-empty when the response starts: a
    per-endpoint helper allowed a class that can deny anyone, after the route's own class needed no marking."""
    return partial(_send_private_when, marks, send)


def _send_private_when(marks: list[str], send: Send, message: Message) -> Awaitable[None]:
    return _send_private(send, message) if marks else send(message)


def _make_private(headers: Any) -> list[tuple[bytes, bytes]]:
    given = [bytes(v).decode("latin-1") for k, v in headers if bytes(k).lower() == b"cache-control"]
    value = private_cache_control(given)
    if value is None:
        return list(headers)
    kept = [(k, v) for k, v in headers if bytes(k).lower() != b"cache-control"]
    return [*kept, (b"cache-control", value.encode("latin-1"))]


def private_cache_control(given: list[str]) -> str | None:
    """The ``Cache-Control`` value that makes a response with *given* values private: the app's directives
    but ``public`` / ``s-maxage``, after ``private``; None when it already is private or ``no-store``."""
    directives = [d.strip() for v in given for d in v.split(",") if d.strip()]
    if any(d.lower() in ("private", "no-store") for d in directives):
        return None
    kept = [d for d in directives if not d.lower().startswith(("public", "s-maxage"))]
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


def expiring_websocket(receive: Receive, send: Send, deadline: float) -> tuple[Receive, Send]:
    """Wrap a WebSocket so it cannot outlive the identity that allowed it: at *deadline* (UNIX time: the
    token's expiry plus any grace) the connection is closed with 1008, and the app is told it disconnected.

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
        remaining = deadline - time.time()
        if closed or remaining <= 0:
            return await close()
        try:
            return await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return await close()

    async def guarded_send(message: Message) -> None:
        if closed or time.time() >= deadline:
            await close()  # whatever the app meant to send, the session is over
            return
        await send(message)

    return guarded_receive, guarded_send
