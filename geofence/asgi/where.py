"""Where a request comes from: its resolved client and that client's location, as the client cache keeps them.

The client cache holds up to tens of thousands of entries, so they are strings (see caches/bounded.py: a dict of
strings is invisible to the garbage collector): :func:`client_key` names a peer and the forwarding headers it
sent, :func:`pack_client` / :func:`unpack_client` carry a :data:`Client`. :func:`locate_client` is the step
from the ASGI scope to those values: the client address (network/client_ip.py), then its network and answer
(geoip/locator.py), then an ``[exempt] networks`` match.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from ..geoip.locator import Locator
from ..network.client_ip import ProxyConfig, resolve_client
from ..policy.load import Policy
from .recording import printable

__all__ = ["ChainWarnings", "Client", "client_key", "locate_client", "pack_client", "unpack_client"]

log = logging.getLogger("geofence")

Client = tuple[str | None, int, str | None, str | None, bool, str | None]
"""A resolved client: (network, facts id, problem, exempt, broken, client text), the atoms of a :class:`Where`
(see :meth:`Locator.locate`)."""


def client_key(peer: str | None, forwarding: Mapping[bytes, bytes]) -> str:
    """The client cache's key for a peer and the forwarding headers it sent, as one string: a dict of strings
    is invisible to the garbage collector (see caches/bounded.py). The peer and header values are length-prefixed, so
    no peer or value (a server may copy client text into the peer) can spell another peer or set of headers."""
    head = "-" if peer is None else f"{len(peer)}:{peer}"
    if not forwarding:
        return head
    if len(forwarding) == 1:  # the usual one header
        for name, value in forwarding.items():
            return f"{head}\x00{name.decode('latin-1')}={len(value)}:{value.decode('latin-1')}"
    parts = [head]
    for name, value in sorted(forwarding.items()):
        parts.append(f"{name.decode('latin-1')}={len(value)}:{value.decode('latin-1')}")
    return "\x00".join(parts)


def pack_client(client: Client) -> str:
    """*client* as the client cache keeps it (one string; the problem, which may quote anything, last)."""
    network, facts_id, problem, exempt, broken, text = client
    return (
        f"{facts_id}\x00{network or ''}\x00{exempt or ''}\x00{'b' if broken else ''}\x00{text or ''}\x00{problem or ''}"
    )


def unpack_client(packed: str) -> Client:
    facts_id, network, exempt, broken, text, problem = packed.split("\x00", 5)
    return (network or None, int(facts_id), problem or None, exempt or None, broken == "b", text or None)


class ChainWarnings:
    """A broken proxy chain is a deployment problem: say what to change, once per kind, not per request (the
    kind leaves out quoted values and addresses, so forged addresses cannot use up the warnings)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def once(self, problem: str) -> None:
        kind = _VARIABLE.sub("", problem)[:80]
        if kind not in self._seen and len(self._seen) < _MAX_WARNINGS:
            self._seen.add(kind)
            log.warning("geofence: denying requests on restricted classes: %s", printable(problem, 400))


_MAX_WARNINGS: Final = 16
_VARIABLE: Final = re.compile(r"'[^']*'|\"[^\"]*\"|\S*\d\S*")  # quoted values, addresses, numbers


def locate_client(
    scope: Mapping[str, Any],
    forwarding: Mapping[bytes, bytes],
    proxies: ProxyConfig,
    locator: Locator,
    policy: Policy,
    warnings: ChainWarnings,
) -> Client:
    """Client address -> location, as plain values. A database error propagates (and is not cached)."""
    client = resolve_client(scope, proxies, forwarding)
    if client.broken:
        problem = client.problem or "broken proxy chain"
        warnings.once(problem)
        return (None, -1, problem, None, True, None)
    if client.key is None:
        return (None, -1, f"client address unknown: {client.problem}", None, False, None)
    text = client.text
    network, facts_id = locator.locate(client.key, text if text is not None and ":" not in text else None)
    return (network, facts_id, None, policy.exempt_network(client.key), False, text)
