"""Request ids: one per request, shared by its log line, its audit records and the app.

A trusted proxy's ``X-Request-ID`` when it is a plain token (so records join with the proxy's logs), else a new
one, unique per process (a random prefix) and per request (a counter). A client's own header is not taken: it
could give its records another request's id. Who is a trusted proxy, the middleware says per request
(:data:`TRUST_KEY`); with no middleware to say so, nobody is.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

__all__ = ["PEER_KEY", "REQUEST_ID_KEY", "TRUST_KEY", "RequestId", "header_request_id", "pending_id", "request_id"]

REQUEST_ID_KEY: Final = "geofence.request_id"
TRUST_KEY: Final = "geofence.request_id.trusts"
"""In ``scope["state"]``: whether a peer (``scope["client"][0]``, None for a Unix socket) is a configured proxy."""
PEER_KEY: Final = "geofence.request_id.client"
"""In ``scope["state"]``: ``scope["client"]`` as the middleware saw it (an app or inner middleware may rewrite
``scope["client"]`` before an id is fixed; the sender is the one geofence saw)."""
_PENDING_KEY: Final = "geofence.request_id.pending"  # a RequestId not fixed yet

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_ID_PREFIX: Final = uuid.uuid4().hex[:12] + "-"  # unique per process; a counter after it is unique per request
_ID_COUNTER: Final = itertools.count(1)


def header_request_id(headers: Iterable[tuple[bytes, bytes]], trusted: bool = False) -> str:
    """The last ``X-Request-ID`` of *headers* when the sender is *trusted* and it is a plain token (a proxy that
    adds its own puts it after the client's), else a new id: unique per process (random prefix) and per request
    (a counter)."""
    if trusted:
        given = None
        for name, value in headers:
            if name == b"x-request-id":
                given = value
        if given is not None and _REQUEST_ID.fullmatch(given):
            return given.decode("ascii")
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def trusted_sender(scope: MutableMapping[str, Any]) -> bool:
    """Whether the middleware vouches for the peer that sent *scope* (a configured proxy), as it saw the peer."""
    state = scope.get("state", {})
    return _vouched(state.get(TRUST_KEY), state.get(PEER_KEY))


def _vouched(trusts: Any, client: Any) -> bool:
    """Whether *trusts* (what the middleware published, or None) takes the peer of *client* for a proxy."""
    return trusts is not None and bool(trusts(client[0] if client else None))


class RequestId:
    """One request's id, fixed by whoever asks first — the request path, a per-endpoint helper, or the audit
    writer's thread — and the same for all of them afterwards.

    An allowed record hands the audit writer this instead of a string: working the id out (a scan of the
    headers, or a new one) is left to the writer thread, off the request path, yet a helper that records the same
    request later gets the same id. Lock-free: the first ``append`` wins and every reader takes ``[0]``.
    """

    __slots__ = ("_fixed", "_headers", "_trusted")

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        # What the id is made of, taken now (the writer thread fixes it after the app has run, and the app may
        # have rewritten the scope by then); whether the sender is a proxy is asked then, off the request path.
        self._headers = scope.get("headers", ())
        state = scope.get("state", {})
        self._trusted = (state.get(TRUST_KEY), state.get(PEER_KEY))
        self._fixed: list[str] = []

    def __str__(self) -> str:
        fixed = self._fixed
        if not fixed:
            fixed.append(header_request_id(self._headers, _vouched(*self._trusted)))
        return fixed[0]


def pending_id(scope: MutableMapping[str, Any]) -> str | RequestId:
    """The request's id if it is fixed already, else its :class:`RequestId` (kept in ``scope["state"]``, so a
    later :func:`request_id` fixes the same one); for the audited allowed request, whose record is cheap."""
    state = scope["state"]
    found = state.get(REQUEST_ID_KEY)
    if found is not None:
        return str(found)
    pending = state.get(_PENDING_KEY)
    if pending is None:
        pending = state[_PENDING_KEY] = RequestId(scope)
    return pending  # type: ignore[no-any-return]


def request_id(scope: MutableMapping[str, Any]) -> str:
    """The request's id for logs, audit records and the denial: a trusted proxy's ``X-Request-ID`` when it is a
    plain token (so records join with the proxy's logs), else a new one. Every record of a request carries the
    same id; it is kept in ``scope["state"]["geofence.request_id"]``, so the app can log it too."""
    state = scope.setdefault("state", {})
    found = state.get(REQUEST_ID_KEY)
    if found is None:  # setdefault: another caller may fix it at the same time; the first one wins
        pending = state.get(_PENDING_KEY)
        if pending is not None:
            fixed = str(pending)
        else:
            fixed = header_request_id(scope.get("headers", ()), trusted_sender(scope))
        found = state.setdefault(REQUEST_ID_KEY, fixed)
    return str(found)
