"""What a request *is*, read once from the ASGI scope: method, path, root path, host, peer, forwarding headers.

Every later step (route, client address, identity) works from these facts, so geofence and the app behind it
cannot disagree about which request they are looking at. Reading is one pass over the headers for the few
that matter; anything ambiguous (two ``Host`` headers, a missing ``Host`` where host rules apply, a
forwarding header too large to trust) is refused here rather than guessed.

:attr:`RequestFacts.key` is the front-cache key. It holds client-controlled text, so it is None — the request
is decided without caching — when that text is large, or when forwarding headers came from a peer that is not
a trusted proxy (an attacker must not be able to fill the cache with header variants).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from functools import partial
from typing import Any, Final, NamedTuple

from ..native import core

__all__ = [
    "MAX_KEY_BYTES",
    "Refused",
    "RequestFacts",
    "key_size",
    "read_request",
    "reference_request_key",
    "request_key",
]

MAX_KEY_BYTES: Final = 2048
"""Requests whose path, host and forwarding headers together are longer are decided without caching."""


# A DNS name (labels, optional trailing dot) or a bracketed IPv6 literal, then an optional port. Anything
# else — "user@host", "host/x", "a,b", spaces — frameworks parse differently, so it matches no host rule safely.
_HOST: Final = re.compile(r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class Refused(Exception):
    """A request geofence will not classify (ambiguous); it is denied with 503 and no traceback."""


class RequestFacts(NamedTuple):
    method: str
    """The HTTP method, or ``WEBSOCKET`` for a WebSocket handshake."""
    path: str
    root_path: str
    host: str
    """The ``Host`` header as sent (latin-1), "" when the policy has no host rules."""
    peer: str | None
    """``scope["client"][0]``: the TCP peer, or the address a server rewrote it to."""
    forwarding: Mapping[bytes, bytes]
    """The watched forwarding headers present, each with all its lines joined by commas."""
    key: tuple[Any, ...] | None
    size: int
    """Bytes of client-controlled text in :attr:`key` (for the cache's byte budget)."""


_NO_HEADERS: Final[Mapping[bytes, bytes]] = {}
_new_facts: Final[Callable[[tuple[Any, ...]], RequestFacts]] = partial(tuple.__new__, RequestFacts)  # no Python __new__


def reference_request_key(
    scope: MutableMapping[str, Any],
    watched: frozenset[bytes],
    needs_host: bool,
    trusted_peer: Callable[[str | None], bool],
) -> tuple[tuple[Any, ...] | None, str, Mapping[bytes, bytes]]:
    """The hot half of reading a request: one pass over the headers, and the front-cache key.

    Returns (key, host, forwarding headers). *watched*: forwarding header names to collect; *trusted_peer*:
    whether a peer is a configured proxy (only then may its headers be part of a key). Raises
    :class:`Refused` for an ambiguous request. The full :class:`RequestFacts` are built only on a cache miss.
    """
    forwarding: dict[bytes, bytes] | None = None
    host = ""
    seen_host = False
    for name, value in scope["headers"]:
        if name in watched:
            if forwarding is None:
                forwarding = {}
            previous = forwarding.get(name)
            forwarding[name] = value if previous is None else previous + b"," + value
        elif needs_host and name == b"host":
            if seen_host:  # servers and frameworks disagree on which copy wins: refuse to guess
                raise Refused("the request has more than one Host header")
            seen_host = True
            host = value.decode("latin-1")
    if needs_host and not host:
        raise Refused("the request has no (or an empty) Host header, and the policy has host rules")
    client = scope.get("client")
    peer = client[0] if client else None
    path = scope["path"]
    root_path = scope.get("root_path", "")
    method = scope.get("method") or "WEBSOCKET"
    size = len(method) + len(path) + len(host) + len(root_path)
    if forwarding is None:
        if size > MAX_KEY_BYTES:
            return None, host, _NO_HEADERS
        return (method, path, root_path, host, peer), host, _NO_HEADERS
    if len(forwarding) == 1:  # the usual one header: no sort, no generator
        header_key = tuple(forwarding.items())
        size += len(header_key[0][1])
    else:
        header_key = tuple(sorted(forwarding.items()))
        size += sum(len(v) for v in forwarding.values())
    if size > MAX_KEY_BYTES or not trusted_peer(peer):
        return None, host, forwarding
    return (method, path, root_path, host, peer, header_key), host, forwarding


request_key: Callable[
    [MutableMapping[str, Any], frozenset[bytes], bool, Callable[[str | None], bool]],
    tuple[tuple[Any, ...] | None, str, Mapping[bytes, bytes]],
] = reference_request_key
"""What the middleware calls: the native fast path when built (which hands the reference what it does not
answer itself: header lists that are not tuples of bytes, odd types), else the reference."""
if core is not None:
    core.configure(_NO_HEADERS, Refused, reference_request_key)
    request_key = core.request_key


def read_request(
    scope: MutableMapping[str, Any], key: tuple[Any, ...] | None, host: str, forwarding: Mapping[bytes, bytes]
) -> RequestFacts:
    """The facts of a request whose key missed the front cache (from :func:`request_key`'s results)."""
    if host and _HOST.fullmatch(host) is None:  # only read when host rules exist; validated once per key
        raise Refused("the request's Host header is not a host name")
    if key is not None:  # it holds them already
        method, path, root_path, host, peer = key[0], key[1], key[2], key[3], key[4]
    else:
        client = scope.get("client")
        path = scope["path"]
        root_path = scope.get("root_path", "")
        method = scope.get("method") or "WEBSOCKET"
        peer = client[0] if client else None
    size = key_size((method, path, root_path, host), forwarding)
    return _new_facts((method, path, root_path, host, peer, forwarding, key, size))


def key_size(key: tuple[Any, ...], forwarding: Mapping[bytes, bytes]) -> int:
    """:attr:`RequestFacts.size`: bytes of client text in a request key (its method, path, root path and host
    first) and its forwarding headers."""
    size = len(key[0]) + len(key[1]) + len(key[2]) + len(key[3])
    return size + sum(len(v) for v in forwarding.values()) if forwarding else size
