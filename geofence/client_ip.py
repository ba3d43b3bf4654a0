"""Who is the client? The TCP peer, or — only when the peer is a trusted proxy — what the proxy says.

Forwarding headers are attacker-controlled text. They are read only when the peer is in ``[proxies] trusted``,
only from the one header the operator chose (never a silent fallback to another), and walked right to left:
each trusted proxy appends the address it saw, so the first untrusted address from the right is the client.
Anything malformed, withheld (``unknown``, obfuscated ``_identifiers``) or missing from a trusted proxy is a
*problem*, never "use the peer instead": the caller then has no known location, which fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from .addresses import address_key
from .errors import InvalidAddressError

__all__ = ["ClientAddress", "ProxyConfig", "resolve_client"]

UNIX: Final = "unix"
"""``[proxies] trusted`` entry that trusts a peer on a Unix socket (``scope["client"]`` is None)."""
_MAX_HOPS: Final = 32
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 7239: pair = token "=" ( token / quoted-string ); IPv6 and ports need quoting.
_FORWARDED_PAIR: Final = re.compile(rf'\s*({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')


class ClientAddress(NamedTuple):
    """The resolved client: its address key, the text it came from, or why it could not be resolved."""

    key: int | None
    text: str | None
    problem: str | None = None
    via: str = "peer"  # "peer" | the header it came from | "server" (scope["client"] rewritten by the server)


@dataclass(frozen=True)
class ProxyConfig:
    """Trusted proxies (inclusive key ranges) and the one header they set."""

    trusted: tuple[tuple[int, int], ...] = ()
    header: str = "x-forwarded-for"
    trust_unix: bool = False

    @classmethod
    def from_networks(cls, networks: Iterable[tuple[int, int, str]], header: str) -> ProxyConfig:
        ranges = []
        unix = False
        for first, last, text in networks:
            if text == UNIX:
                unix = True
            else:
                ranges.append((first, last))
        return cls(tuple(sorted(ranges)), header.lower(), unix)

    def is_trusted(self, key: int) -> bool:
        for first, last in self.trusted:
            if first <= key <= last:
                return True
        return False


def _parse_node(text: str) -> int:
    """An address from a forwarding header: IPv4 or IPv6, optionally with a port or brackets."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise InvalidAddressError(text)
        return address_key(host)
    if text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise InvalidAddressError(text)
        text = host
    return address_key(text)


def _xff_nodes(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _forwarded_nodes(value: str) -> list[str]:
    """The ``for=`` value of each element of an RFC 7239 ``Forwarded`` header."""
    nodes = []
    for element in _split_elements(value):
        found = None
        position = 0
        while position < len(element):
            match = _FORWARDED_PAIR.match(element, position)
            if match is None:
                raise InvalidAddressError(f"malformed Forwarded element {element[:60]!r}")
            name, raw = match.group(1).lower(), match.group(2)
            if name == "for":
                if found is not None:
                    raise InvalidAddressError("a Forwarded element has two for= parameters")
                found = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
            position = match.end()
            if position < len(element):
                if element[position] != ";":
                    raise InvalidAddressError(f"malformed Forwarded element {element[:60]!r}")
                position += 1
        if found is None:
            raise InvalidAddressError("a Forwarded element has no for= parameter")
        nodes.append(found)
    return nodes


def _split_elements(value: str) -> list[str]:
    """Split on commas outside quoted strings; drop empty elements (RFC 9110 list syntax)."""
    elements: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quoted:
        raise InvalidAddressError("unterminated quoted string in Forwarded")
    elements.append("".join(current).strip())
    return [e for e in elements if e]


def resolve_client(scope: Mapping[str, Any], config: ProxyConfig, header: bytes | None) -> ClientAddress:
    """Resolve the client of *scope*. *header* is the configured header, its lines joined with commas."""
    client = scope.get("client")
    peer_text = client[0] if client else None
    if peer_text is None:
        if not config.trust_unix:
            return ClientAddress(None, None, "no client address (Unix socket peer not in [proxies] trusted)")
        peer_key = None
    else:
        try:
            peer_key = address_key(peer_text)
        except InvalidAddressError:
            return ClientAddress(None, peer_text, f"the server reported an invalid client address {peer_text[:60]!r}")
        if not config.is_trusted(peer_key):
            if header is not None and config.trusted:
                return _check_server_rewrite(peer_key, peer_text, config, header)
            return ClientAddress(peer_key, peer_text)
    # The peer is a trusted proxy: its header names the client.
    if header is None:
        return ClientAddress(None, None, f"trusted proxy sent no {config.header} header")
    try:
        return _walk(header.decode("latin-1"), config)
    except InvalidAddressError as exc:
        return ClientAddress(None, None, f"malformed {config.header} from trusted proxy: {_short(str(exc))}")


def _walk(value: str, config: ProxyConfig) -> ClientAddress:
    header = config.header
    if header == "x-forwarded-for":
        nodes = _xff_nodes(value)
    elif header == "forwarded":
        nodes = _forwarded_nodes(value)
    else:  # a single-value header such as cf-connecting-ip or true-client-ip
        nodes = [value.strip()]
        if "," in value:
            raise InvalidAddressError(f"{header} must hold one address, got {value[:60]!r}")
    if not nodes:
        raise InvalidAddressError("empty")
    if len(nodes) > _MAX_HOPS:
        nodes = nodes[-_MAX_HOPS:]  # an attacker may pad the left; the trusted hops are on the right
    for node in reversed(nodes):
        if node.lower() == "unknown" or node.startswith("_"):
            return ClientAddress(None, None, f"a proxy withheld the client address ({node[:40]!r} in {header})")
        key = _parse_node(node)
        if not config.is_trusted(key):
            return ClientAddress(key, node, via=header)
    # Every hop is a trusted proxy: the leftmost is where the request started.
    key = _parse_node(nodes[0])
    return ClientAddress(key, nodes[0], via=header)


def _check_server_rewrite(peer_key: int, peer_text: str, config: ProxyConfig, header: bytes) -> ClientAddress:
    """An untrusted peer with a forwarding header: either a client sending its own header (ignored), or a
    server that already replaced ``scope["client"]`` from the header (uvicorn ``--proxy-headers``).

    A server rewrite is accepted only when it agrees with our own walk of the header; a server that trusts
    more than ``[proxies] trusted`` (``--forwarded-allow-ips="*"`` takes the *leftmost* address, which the
    client controls) disagrees, and that fails closed.
    """
    try:
        value = header.decode("latin-1")
        ours = _walk(value, config)
        listed = {_parse_node(n) for n in _nodes_lenient(value, config.header)}
    except InvalidAddressError:
        return ClientAddress(peer_key, peer_text)  # the peer itself is known; its header is just noise
    if peer_key not in listed or ours.key == peer_key:
        return ClientAddress(peer_key, peer_text, via="server" if peer_key in listed else "peer")
    return ClientAddress(
        None,
        peer_text,
        "the server replaced the client address from a forwarding header it trusts more than [proxies] trusted "
        "(run the server without proxy headers, or with the same trusted proxies)",
    )


def _nodes_lenient(value: str, header: str) -> list[str]:
    if header == "forwarded":
        return [n for n in _forwarded_nodes(value) if n.lower() != "unknown" and not n.startswith("_")]
    return [n for n in _xff_nodes(value) if n.lower() != "unknown"]


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:80] + "..."
