"""IP address parsing, normalisation and the special-purpose ranges that must never be geolocated.

Addresses are handled as integers in one 128-bit key space where IPv4 lives at ``::ffff:0:0/96`` (its
IPv4-mapped form). That makes ``1.2.3.4`` and ``::ffff:1.2.3.4`` the same key without a branch, lets one cache
hold both families, and keeps parsing to a single ``inet_pton`` call: no ``ipaddress`` objects on the hot path.

The special-purpose table follows the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its
updates), entries whose "Globally Reachable" is False. Python's ``ipaddress.is_global`` is not used: in 3.11 it
calls multicast (``ff02::1``) global.
"""

from __future__ import annotations

import re
import socket
from bisect import bisect_right
from typing import Final, NamedTuple

from ..errors import InvalidAddressError

__all__ = [
    "SPECIAL_RANGES",
    "V4_BASE",
    "Address",
    "SpecialRange",
    "address_key",
    "format_network",
    "key_address",
    "parse_address",
    "parse_network",
    "special_range",
]

V4_BASE: Final = 0xFFFF << 32
"""Key of ``0.0.0.0``: IPv4 addresses are keyed as their IPv4-mapped IPv6 form."""
_V4_MAX: Final = V4_BASE | 0xFFFFFFFF
_MAX_TEXT: Final = 64  # longest IPv6 text (45) plus a generous zone id
_NAT64: Final = 0x64FF9B << 64  # 64:ff9b::/96 shifted right by 32 bits
_ZONE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # interface names and numeric zone ids, nothing else
# IPv6 blocks whose addresses carry an IPv4 address (see _unwrap): (block, prefix, lowest bit of the IPv4 address).
_CARRIERS: Final = ((V4_BASE, 96, 0), (_NAT64 << 32, 96, 0), (0x2002 << 112, 16, 80))

_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_from_bytes = int.from_bytes
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


class Address(NamedTuple):
    """A parsed address: its key, the text a database reader is given, and its family."""

    key: int
    text: str
    version: int


def address_key(text: str) -> int:
    """The key of address *text*: the hot-path half of :func:`parse_address` (no object built)."""
    if type(text) is str and "%" not in text:
        try:
            if ":" not in text:
                return V4_BASE | _from_bytes(_inet_pton(_AF_INET, text), "big")
            return _unwrap(_from_bytes(_inet_pton(_AF_INET6, text), "big"))
        except (OSError, ValueError):
            pass
    return parse_address(text).key


def _unwrap(key: int) -> int:
    """The IPv4 key for IPv6 forms that carry a client's IPv4 address: 6to4 (``2002:AABB:CCDD::/48``, which
    MaxMind's databases alias to the IPv4 tree, but other databases map wholesale to one country) and the
    NAT64 well-known prefix ``64:ff9b::/96`` (SIIT-DC: IPv4 clients of an IPv6-only server). Geolocating the
    embedded address also applies the special-range check to it: ``2002:a00:1::`` is private 10.0.0.1."""
    if key >> 112 == 0x2002:
        return V4_BASE | ((key >> 80) & 0xFFFFFFFF)
    if key >> 32 == _NAT64:
        return V4_BASE | (key & 0xFFFFFFFF)
    return key


def parse_address(text: str) -> Address:
    """Parse *text* as an IP address and normalise it.

    IPv4-mapped (``::ffff:a.b.c.d``), 6to4 and NAT64 (``64:ff9b::a.b.c.d``) IPv6 addresses become the IPv4
    address they carry; an IPv6 zone id (``fe80::1%eth0``) is dropped. Anything else that is not a strict
    address (leading zeros, short forms, brackets, ports, whitespace) raises :class:`InvalidAddressError`:
    guessing what a malformed address meant is how allow/deny filters get bypassed.
    """
    return key_address(_unwrap(_literal_key(text)[0]))


def _literal_key(text: str) -> tuple[int, int]:
    """The key of address *text* as written (not unwrapped) and the family it was written in."""
    if type(text) is not str:
        raise InvalidAddressError(f"expected an IP address string, got {type(text).__name__}")
    try:
        if ":" not in text:
            return V4_BASE | _from_bytes(_inet_pton(_AF_INET, text), "big"), 4
        address, _, zone = text.partition("%")
        if "%" in text and not _ZONE.fullmatch(zone):
            raise OSError
        return _from_bytes(_inet_pton(_AF_INET6, address), "big"), 6
    except (OSError, ValueError):  # ValueError: embedded NUL
        shown = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
        raise InvalidAddressError(f"{shown!r} is not a valid IP address") from None


def key_address(key: int) -> Address:
    """The :class:`Address` of a key: canonical text (IPv4 dotted quad, IPv6 RFC 5952) and family."""
    if V4_BASE <= key <= _V4_MAX:
        return Address(key, _inet_ntop(_AF_INET, (key & 0xFFFFFFFF).to_bytes(4, "big")), 4)
    return Address(key, _inet_ntop(_AF_INET6, key.to_bytes(16, "big")), 6)


def format_network(key: int, prefix: int) -> str:
    """CIDR text of the network of *prefix* bits (in the 128-bit key space) that contains *key*."""
    if prefix >= 96 and V4_BASE <= key <= _V4_MAX:  # inet_ntop and a table: a third of an f-string's cost
        return _inet_ntop(_AF_INET, (key & _V4_MASKS[prefix - 96]).to_bytes(4, "big")) + _SUFFIXES[prefix - 96]
    start = key & ~((1 << (128 - prefix)) - 1)
    return f"{_inet_ntop(_AF_INET6, start.to_bytes(16, 'big'))}/{prefix}"


_V4_MASKS: Final = tuple((0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF for bits in range(33))
_SUFFIXES: Final = tuple(f"/{bits}" for bits in range(33))


class SpecialRange(NamedTuple):
    """A range of addresses that is not globally reachable, so has no geography."""

    first: int
    last: int
    network: str
    reason: str


# (network, reason) in order of increasing specificity: a later, narrower entry overrides an earlier, wider one,
# and a reason of None carves out an assignment the registry marks globally reachable. Reasons are stable codes:
# they appear in JSON output and in decisions.
_SPECIAL_PURPOSE: Final[tuple[tuple[str, str | None], ...]] = (
    ("0.0.0.0/8", "unspecified"),  # "this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),  # shared address space, RFC 6598
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.0.9/32", None),
    ("192.0.0.10/32", None),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # incl. 255.255.255.255 and Cloudflare "pseudo IPv4"
    ("::/96", "reserved"),  # deprecated IPv4-compatible addresses
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private"),  # local-use IPv4/IPv6 translation, RFC 8215
    ("100::/64", "reserved"),  # discard-only, RFC 6666
    ("100:0:0:1::/64", "reserved"),  # dummy prefix, RFC 9780
    ("2001::/23", "reserved"),  # IETF protocol assignments, incl. Teredo (2001::/32)
    ("2001:1::1/128", None),
    ("2001:1::2/128", None),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", None),
    ("2001:4:112::/48", None),
    ("2001:20::/28", None),
    ("2001:30::/28", None),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),  # RFC 9637
    ("5f00::/16", "reserved"),  # SRv6 SIDs, RFC 9602
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link_local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
)


def _build_table() -> tuple[list[int], list[SpecialRange]]:
    """Paint the entries in order onto the key space, then read off the disjoint special runs."""
    painted: list[tuple[int, int, str, str | None]] = []  # disjoint (first, last, network, reason)
    for network, reason in _SPECIAL_PURPOSE:
        text, _, bits = network.partition("/")
        address = parse_address(text)
        first = address.key
        last = first | ((1 << (128 - int(bits) - (96 if address.version == 4 else 0))) - 1)
        kept = []
        for lo, hi, old_network, old_reason in painted:
            if hi < first or lo > last:
                kept.append((lo, hi, old_network, old_reason))
                continue
            if lo < first:
                kept.append((lo, first - 1, old_network, old_reason))
            if hi > last:
                kept.append((last + 1, hi, old_network, old_reason))
        kept.append((first, last, network, reason))
        painted = sorted(kept)
    ranges = [SpecialRange(lo, hi, net, why) for lo, hi, net, why in painted if why is not None]
    return [r.first for r in ranges], ranges


_SPECIAL_FIRSTS, _SPECIAL = _build_table()
SPECIAL_RANGES: Final = tuple((s.first, s.last) for s in _SPECIAL)
"""Every key range :func:`special_range` answers from its table (for the native walk, which leaves them to it)."""


def special_range(key: int) -> tuple[SpecialRange | None, int, int]:
    """Classify *key*: the special range holding it (or None), and the bounds of the run of keys around it
    that share that answer and its address family. Callers use the bounds to cache a lookup without ever
    covering a special range, or covering IPv4 with an IPv6 answer (a database network such as ``::/0`` from
    an IPv6 lookup contains ``::ffff:0:0/96``, where IPv4 keys live)."""
    if V4_BASE <= key <= _V4_MAX:  # most clients: a table by first octet answers without a search
        clean = _V4_CLEAN[(key >> 24) & 0xFF]
        if clean is not None:
            return clean
    return _search(key)


def _search(key: int) -> tuple[SpecialRange | None, int, int]:
    i = bisect_right(_SPECIAL_FIRSTS, key) - 1
    if i >= 0 and key <= _SPECIAL[i].last:
        found = _SPECIAL[i]
        return found, found.first, found.last
    low = _SPECIAL[i].last + 1 if i >= 0 else 0
    high = _SPECIAL[i + 1].first - 1 if i + 1 < len(_SPECIAL) else (1 << 128) - 1
    if key < V4_BASE:
        high = min(high, V4_BASE - 1)
    elif key > _V4_MAX:
        low = max(low, _V4_MAX + 1)
    return None, low, high


def _clean_octets() -> tuple[tuple[None, int, int] | None, ...]:
    """Per IPv4 first octet: the answer of :func:`special_range` when the whole /8 holds no special address."""
    table: list[tuple[None, int, int] | None] = []
    for octet in range(256):
        first = V4_BASE | octet << 24
        last = first | 0xFFFFFF
        i = bisect_right(_SPECIAL_FIRSTS, last) - 1
        inside = i >= 0 and _SPECIAL[i].last >= first  # some special range ends inside (or covers) the /8
        table.append(None if inside else _search(first))  # type: ignore[arg-type]
    return tuple(table)


_V4_CLEAN: Final = _clean_octets()


def parse_network(text: str) -> tuple[int, int, str]:
    """A CIDR (or single address) as an inclusive key range (with its text); strict about host bits.

    The range is in the space addresses are keyed in, so an IPv6 network that carries IPv4 means the IPv4
    network it carries (``::ffff:10.0.0.0/104``, ``64:ff9b::a00:0/104`` and ``2002:a00::/24`` are all
    ``10.0.0.0/8``): its addresses are unwrapped before they are matched, so any other reading would silently
    match nothing. Networks that cannot be one range after unwrapping are refused. Raises ValueError with a
    message fit for a policy problem."""
    address, slash, bits = text.partition("/")
    try:
        key, version = _literal_key(address)
    except InvalidAddressError:
        raise ValueError(f"{text!r} is not an IP network") from None
    width = 32 if version == 4 else 128
    if slash and not (bits.isascii() and bits.isdigit() and int(bits) <= width):
        raise ValueError(f"{text!r}: prefix length must be 0-{width}")
    prefix = (int(bits) if slash else width) + 128 - width  # in the 128-bit key space
    span = (1 << (128 - prefix)) - 1
    if key & span:
        raise ValueError(f"{text!r} has host bits set (did you mean the network containing it?)")
    for block, block_prefix, low_bit in _CARRIERS:
        if prefix >= block_prefix and key >> (128 - block_prefix) == block >> (128 - block_prefix):
            v4_prefix = prefix - block_prefix
            if v4_prefix > 32:  # inside one 6to4 site: every address in it is the same IPv4 address
                site = format_network(key, block_prefix + 32)
                v4 = key_address(_unwrap(key)).text
                raise ValueError(
                    f"{text!r} is inside the 6to4 site {site}, whose addresses are all matched as the IPv4 "
                    f"address {v4} they carry: write {v4!r} (or {site!r})"
                )
            if v4_prefix < 8 and version == 6:  # "2002::/16" reads as a 6to4 block but means all of IPv4
                raise ValueError(
                    f"{text!r} means the IPv4 network {key_address(V4_BASE | ((key >> low_bit) & 0xFFFFFFFF)).text}"
                    f"/{v4_prefix}, which is most or all of IPv4: write the IPv4 networks you mean"
                )
            first = V4_BASE | ((key >> low_bit) & 0xFFFFFFFF)
            return first, first | ((1 << (32 - v4_prefix)) - 1), text
        if (
            prefix < block_prefix
            and block >> (128 - prefix) == key >> (128 - prefix)
            and not key <= V4_BASE <= key | span
        ):
            raise ValueError(
                f"{text!r} contains {format_network(block, block_prefix)}, whose addresses are matched as the IPv4 "
                "address they carry, so it cannot be one range: list the rest of it as smaller networks, and the "
                "IPv4 networks you mean"
            )
    return key, key | span, text
