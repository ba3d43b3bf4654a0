"""Who is the client? The TCP peer, or — only when the peer is a trusted proxy — what the proxy says.

Forwarding headers are attacker-controlled text. They are read only when the peer is in ``[proxies] trusted``,
only from the one header the operator chose (never a silent fallback to another), and walked right to left:
each trusted proxy appends the address it saw, so the first untrusted address from the right is the client.
Anything missing, malformed, withheld (``unknown``, obfuscated ``_identifiers``) or oversized from a trusted
proxy is a *broken* chain, never "use the peer instead": the middleware then denies the request outright.

The peer itself may not be the TCP peer: uvicorn (``--proxy-headers``, on by default for 127.0.0.1) and
hypercorn's ``ProxyFixMiddleware`` replace ``scope["client"]`` from X-Forwarded-For / Forwarded before we run,
by their own rules. So an untrusted peer that is *listed* in X-Forwarded-For, Forwarded or the configured
header (compared as parsed addresses, every parseable entry) is taken as a server rewrite, and accepted only
if ``[proxies]`` agrees: the configured header, walked strictly through ``[proxies] trusted``, names exactly
that address. Otherwise the chain is broken. A peer listed nowhere is the client; the headers are its noise.
A peer with no address (an untrusted Unix socket, or a string such as uvicorn's copy of ``1.2.3.4:80``) has
no location, and is broken when forwarding headers came with it.

What this can and cannot detect. The original TCP peer is gone after a rewrite, so we cannot tell a rewrite
made for a trusted proxy from one made for anyone the server trusts (``--forwarded-allow-ips="*"``, or
ProxyFix, which trusts by hop count). Detected: a server that trusts more than ``[proxies]`` and shows it, by
picking an address our walk would not (``"*"`` takes the leftmost of several untrusted entries); a server
that rewrote from a header other than the configured one, when the configured header is absent or names
someone else; any rewrite when ``[proxies]`` trusts nothing; unparseable entries (skipped, never "no
evidence"). Not detected: (1) a server that trusted a direct client and rewrote to exactly the entry our
own walk of the configured header picks: a forged entry with only ``[proxies] trusted`` addresses right of it,
typically a single ``X-Forwarded-For: X`` (with ``header = "forwarded"`` the client must also send a matching
``Forwarded: for=X``); (2) a rewrite to an address inside ``[proxies] trusted`` (we then walk its header as a
proxy's); (3) a rewrite from a header we do not watch (X-Real-IP, ...) that is not the configured one.
Hence the README's advice: ``--no-proxy-headers``, or ``--forwarded-allow-ips`` equal to ``[proxies] trusted``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Final, NamedTuple

from ..errors import InvalidAddressError
from .addresses import address_key

__all__ = ["ClientAddress", "ProxyConfig", "resolve_client"]

UNIX: Final = "unix"
"""``[proxies] trusted`` entry that trusts a peer on a Unix socket (``scope["client"]`` is None)."""
_XFF: Final = b"x-forwarded-for"
_FORWARDED: Final = b"forwarded"
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 7239: pair = token "=" ( token / quoted-string ); IPv6 and ports need quoting.
_FORWARDED_PAIR: Final = re.compile(rf'\s*({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')
_PORT: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 node-port: port / obfport
_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._-]+")  # RFC 7239 obfnode
# Any for= value, however malformed the rest of the field: only used to find evidence of a rewrite.
_ADDRESS_RUN: Final = re.compile(r"[0-9A-Fa-f:.]{2,}")
_FIX: Final = (
    "run the server without proxy headers (uvicorn --no-proxy-headers, no hypercorn ProxyFixMiddleware), "
    "or set [proxies] to match what it trusts (uvicorn --forwarded-allow-ips)"
)


class ClientAddress(NamedTuple):
    """The resolved client: its address key and the text it came from, or why it could not be resolved.

    ``broken`` marks a result the middleware must deny even where unknown locations are allowed: a proxy
    chain we cannot read, or a server rewrite we cannot verify. ``text`` is set exactly when ``key`` is."""

    key: int | None
    text: str | None
    problem: str | None = None
    via: str = "peer"  # "peer" | the header it came from | "server" (scope["client"] rewritten by the server)
    broken: bool = False


_new_address: Final[Callable[[tuple[Any, ...]], ClientAddress]] = partial(tuple.__new__, ClientAddress)
"""Build a ClientAddress from a complete tuple: a NamedTuple's Python-level ``__new__`` costs ~4,000 instructions."""


@dataclass(frozen=True)
class ProxyConfig:
    """Trusted proxies (inclusive key ranges), the one header they set, and how long it may be."""

    trusted: tuple[tuple[int, int], ...] = ()
    header: str = "x-forwarded-for"
    trust_unix: bool = False
    max_header_bytes: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.header.lower())

    @cached_property
    def watched(self) -> tuple[bytes, ...]:
        """Headers the middleware collects: the configured one first, then those servers rewrite from."""
        return tuple(dict.fromkeys((self.header.encode("latin-1"), _XFF, _FORWARDED)))

    @classmethod
    def from_networks(
        cls, networks: Iterable[tuple[int, int, str]], header: str, max_header_bytes: int = 4096
    ) -> ProxyConfig:
        ranges = []
        unix = False
        for first, last, text in networks:
            if text == UNIX:
                unix = True
            else:
                ranges.append((first, last))
        return cls(tuple(sorted(ranges)), header, unix, max_header_bytes)

    def is_trusted(self, key: int) -> bool:
        for first, last in self.trusted:
            if first <= key <= last:
                return True
        return False


def resolve_client(scope: Mapping[str, Any], config: ProxyConfig, headers: Mapping[bytes, bytes]) -> ClientAddress:
    """Resolve the client of *scope*. *headers* maps each of ``config.watched`` present in the request to all
    its lines joined with commas."""
    client = scope.get("client")
    if client is None:
        if config.trust_unix:
            return _from_proxy(config, headers)
        return _no_address("no client address (Unix socket peer not in [proxies] trusted)", headers)
    peer_text = client[0]
    try:
        peer_key = address_key(peer_text)
    except InvalidAddressError:
        return _no_address(f"the server reported an invalid client address {str(peer_text)[:60]!r}", headers)
    if config.is_trusted(peer_key):
        return _from_proxy(config, headers)
    if not headers:
        return _new_address((peer_key, peer_text, None, "peer", False))  # the common case, built directly
    return _check_server_rewrite(peer_key, peer_text, config, headers)


def _broken(problem: str) -> ClientAddress:
    return ClientAddress(None, None, problem, broken=True)


def _no_address(problem: str, headers: Mapping[bytes, bytes]) -> ClientAddress:
    """A peer without an address has no location; with forwarding headers it is broken instead: a proxy nobody
    trusted sent them, or a server put a value from them in ``scope["client"]`` (uvicorn copies any entry)."""
    if headers:
        return _broken(f"{problem}, with forwarding headers")
    return ClientAddress(None, None, problem)


def _from_proxy(config: ProxyConfig, headers: Mapping[bytes, bytes]) -> ClientAddress:
    """The client a trusted proxy names in the configured header (``watched[0]``)."""
    value = headers.get(config.watched[0])
    if value is None:
        return _broken(f"trusted proxy sent no {config.header} header")
    if len(value) > config.max_header_bytes:
        return _broken(f"{config.header} is longer than {config.max_header_bytes} bytes")
    return _walk(value.decode("latin-1"), config)


def _walk(value: str, config: ProxyConfig) -> ClientAddress:
    header = config.header
    try:
        if header == "x-forwarded-for":
            nodes = [stripped for part in value.split(",") if (stripped := part.strip())]
        elif header == "forwarded":
            nodes = _forwarded_nodes(value)
        else:  # a single-value header such as cf-connecting-ip or true-client-ip
            if "," in value:
                raise InvalidAddressError(f"{header} must hold one address, got {value[:60]!r}")
            nodes = [stripped] if (stripped := value.strip()) else []
        if not nodes:
            raise InvalidAddressError("empty")
        for node in reversed(nodes):
            key = _node_key(node, bracketed_ipv6=header == "forwarded")
            if key is None:
                return _broken(f"a proxy withheld the client address ({node[:40]!r} in {header})")
            if not config.is_trusted(key):
                return ClientAddress(key, node, via=header)
        return ClientAddress(key, node, via=header)  # every hop is a trusted proxy: the leftmost started it
    except InvalidAddressError as exc:
        return _broken(f"malformed {header}: {_short(str(exc))}")


def _node_key(text: str, bracketed_ipv6: bool) -> int | None:
    """The key of a forwarding-header node (address, optional port, IPv6 in brackets), or None when the
    proxy withheld it (``unknown``, an obfuscated ``_identifier``). RFC 7239 requires the brackets around
    IPv6 (*bracketed_ipv6*); X-Forwarded-For has no standard, and proxies write bare IPv6 there."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or ":" not in host or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest, 1))):
            raise InvalidAddressError(f"{text[:60]!r} is not an address")
        return address_key(host)
    host = text
    if ":" in text:
        if text.count(":") == 1:  # IPv4 (or unknown / an obfuscated node) with a port
            host, _, port = text.partition(":")
            if not _PORT.fullmatch(port):
                raise InvalidAddressError(f"{text[:60]!r} has an invalid port")
        elif bracketed_ipv6:
            raise InvalidAddressError(f'IPv6 {text[:60]!r} must be bracketed: for="[{text[:60]}]"')
    try:
        return address_key(host)
    except InvalidAddressError:
        if host.lower() == "unknown" or _OBFUSCATED.fullmatch(host):
            return None
        raise


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


def _check_server_rewrite(
    peer_key: int, peer_text: str, config: ProxyConfig, headers: Mapping[bytes, bytes]
) -> ClientAddress:
    """An untrusted peer with forwarding headers: a client's own noise, or a server that already replaced
    ``scope["client"]`` from one of them (see the module docstring)."""
    for name in config.watched:
        value = headers.get(name)
        if value is None:
            continue
        if len(value) > config.max_header_bytes:
            return _broken(
                f"{name.decode('latin-1')} is longer than {config.max_header_bytes} bytes, so whether the server "
                "replaced the client address from it cannot be checked"
            )
        if peer_key in _listed(value.decode("latin-1")):
            break
    else:
        return ClientAddress(peer_key, peer_text)  # listed nowhere: the peer is the client
    shown = f"the server replaced the client address with {str(peer_text)[:60]!r} from a forwarding header"
    if not config.trusted and not config.trust_unix:
        return _broken(f"{shown}, but [proxies] trusts no proxy address: {_FIX}")
    if config.watched[0] not in headers:
        return _broken(f"{shown}, but the request has no {config.header} header ([proxies] header): {_FIX}")
    ours = _from_proxy(config, headers)
    if ours.key == peer_key:
        return ClientAddress(peer_key, peer_text, via="server")
    why = f"({ours.problem})" if ours.broken else f"({config.header} through [proxies] trusted names {ours.text!r})"
    return _broken(f"{shown}, but [proxies] disagrees {why}: {_FIX}")


def _listed(value: str) -> Iterator[int]:
    """Every address a server could have taken from a forwarding header, read more leniently than any server
    reads it: each run of address characters, with and without a trailing ``:port``, whatever surrounds it.
    Servers differ (uvicorn strips brackets and accepts ports like ``:+80``, ``:1_0`` or ``:123456``); if a
    spelling we refuse could still have become the peer, it must count as listed, or the rewrite is hidden."""
    for match in _ADDRESS_RUN.finditer(value):
        run = match.group()
        for candidate in (run, run.rpartition(":")[0]):
            if candidate:
                try:
                    yield address_key(candidate)
                except InvalidAddressError:
                    continue


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:80] + "..."
