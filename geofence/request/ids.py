"""Request ids: one per request, shared by its log line, its audit records and the app.

The client's or proxy's ``X-Request-ID`` when it is a plain token (so records join with the proxy's logs), else
a new one, unique per process (a random prefix) and per request (a counter).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

__all__ = ["REQUEST_ID_KEY", "RequestId", "header_request_id", "pending_id", "request_id"]

REQUEST_ID_KEY: Final = "geofence.request_id"
_PENDING_KEY: Final = "geofence.request_id.pending"  # a RequestId not fixed yet

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_ID_PREFIX: Final = uuid.uuid4().hex[:12] + "-"  # unique per process; a counter after it is unique per request
_ID_COUNTER: Final = itertools.count(1)


def header_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The ``X-Request-ID`` of *headers* when it is a plain token (so records join with the proxy's logs), else
    a new id: unique per process (random prefix) and per request (a counter)."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class RequestId:
    """One request's id, fixed by whoever asks first — the request path, a per-endpoint helper, or the audit
    writer's thread — and the same for all of them afterwards.

    An allowed record hands the audit writer this instead of a string: working the id out (a scan of the
    headers, or a new one) is left to the writer thread, off the request path, yet a helper that records the same
    request later gets the same id. Lock-free: the first ``append`` wins and every reader takes ``[0]``.
    """

    __slots__ = ("_fixed", "_headers")

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self._headers = headers
        self._fixed: list[str] = []

    def __str__(self) -> str:
        fixed = self._fixed
        if not fixed:
            fixed.append(header_request_id(self._headers))
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
        pending = state[_PENDING_KEY] = RequestId(scope["headers"])
    return pending  # type: ignore[no-any-return]


def request_id(scope: MutableMapping[str, Any]) -> str:
    """The request's id for logs, audit records and the denial: the client's or proxy's ``X-Request-ID`` when it
    is a plain token (so records join with the proxy's logs), else a new one. Every record of a request carries
    the same id; it is kept in ``scope["state"]["geofence.request_id"]``, so the app can log it too."""
    state = scope.setdefault("state", {})
    found = state.get(REQUEST_ID_KEY)
    if found is None:  # setdefault: another caller may fix it at the same time; the first one wins
        pending = state.get(_PENDING_KEY)
        fixed = str(pending) if pending is not None else header_request_id(scope.get("headers", ()))
        found = state.setdefault(REQUEST_ID_KEY, fixed)
    return str(found)
