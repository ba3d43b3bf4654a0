"""Property-based fuzzing of client resolution: whatever the headers and the peer, the client is never an
address the caller chose, and nothing escapes but a result."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import InvalidAddressError
from geofence.network.addresses import address_key, parse_network
from geofence.network.client_ip import ProxyConfig, _forwarded_nodes, resolve_client

_TRUSTED = [parse_network(n) for n in ("10.0.0.0/8", "2001:db8:1::/48")]
CONFIGS = [
    ProxyConfig(),
    ProxyConfig.from_networks(_TRUSTED, "x-forwarded-for"),
    ProxyConfig.from_networks(_TRUSTED, "forwarded"),
    ProxyConfig.from_networks(_TRUSTED, "cf-connecting-ip"),
    ProxyConfig.from_networks([*_TRUSTED, (0, -1, "unix")], "x-forwarded-for", max_header_bytes=64),
]
_PEERS = ["10.0.0.5", "::ffff:10.0.0.5", "2001:db8:1::5", "1.2.3.4", "2001:db8::1", "8.8.8.8", "10.0.0.7"]
_NODES = [
    *_PEERS,
    *(f"[{p}]:443" for p in _PEERS if ":" in p),
    *(f"{p}:80" for p in _PEERS if ":" not in p),
    "unknown",
    "_hidden",
]
_FORS = [*(f'for="{node}"' for node in _NODES), *(f"for={node}" for node in _NODES if ":" not in node)]
_PUNCTUATION = [":_p1", "for=", "by=", ";", ",", ", ", '"', "\\", "=", "[", "]", " ", "\xff", "\x00"]


def _joined(parts: list[str], separator: str = ", ") -> bytes:
    return separator.join(parts).encode("latin-1", "replace")


HEADER = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(_NODES), min_size=1, max_size=4).map(_joined),
    st.lists(st.sampled_from(_FORS), min_size=1, max_size=4).map(_joined),
    st.lists(st.one_of(st.sampled_from(_NODES + _FORS + _PUNCTUATION), st.text(max_size=4)), max_size=12).map(
        lambda parts: _joined(parts, "")
    ),
)
PEER = st.one_of(st.sampled_from(_PEERS), st.none(), st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn) -> tuple[ProxyConfig, str | None, dict[bytes, bytes]]:
    config = draw(st.sampled_from(CONFIGS))
    headers = {name: draw(HEADER) for name in config.watched if draw(st.booleans())}
    return config, draw(PEER), headers


def _peer(peer: str | None, config: ProxyConfig) -> tuple[int | None, bool]:
    """The peer's key (None: a Unix socket or not an address) and whether it is a trusted proxy."""
    if peer is None:
        return None, config.trust_unix
    try:
        key = address_key(peer)
    except InvalidAddressError:
        return None, False
    return key, config.is_trusted(key)


def _core(node: str) -> str:
    """The address inside a node, by a rule of its own: brackets and a port removed."""
    if match := re.fullmatch(r"\[(.*)\](?::.*)?", node):
        return match.group(1)
    return node.partition(":")[0] if node.count(":") == 1 else node


@settings(max_examples=500)
@given(requests())
def test_resolve_client_on_anything(request: tuple[ProxyConfig, str | None, dict[bytes, bytes]]) -> None:
    config, peer, headers = request
    found = resolve_client({"client": None if peer is None else (peer, 1)}, config, headers)
    assert (found.key is None) == (found.text is None)
    assert not found.broken or (found.key is None and found.problem)
    peer_key, trusted = _peer(peer, config)
    if trusted:
        # From a trusted proxy: an address written in the configured header, or broken.
        if not found.broken:
            assert found.text is not None and found.via == config.header
            assert found.text in headers[config.watched[0]].decode("latin-1").replace("\\", "")
            assert address_key(_core(found.text)) == found.key
    else:
        # From anyone else: the peer itself (or nothing, for a Unix socket), or broken.
        assert found.broken or found.key == peer_key


@settings(max_examples=500)
@given(st.text(max_size=120))
def test_forwarded_parser_on_anything(value: str) -> None:
    try:
        nodes = _forwarded_nodes(value)
    except InvalidAddressError:
        return
    assert all(isinstance(node, str) for node in nodes)


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._-!#$%&'*+^`|~", min_size=1, max_size=8)
_QUOTABLE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _elements(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A valid Forwarded field and the for= value of each element."""
    fors, elements = [], []
    for _ in range(draw(st.integers(1, 4))):
        fors.append(draw(_QUOTABLE))
        pairs = [f"{draw(st.sampled_from(['for', 'For', 'FOR']))}={_quoted(fors[-1])}"]
        names = draw(st.lists(_TOKEN.filter(lambda name: name.lower() != "for")))
        pairs += [f"{name}={draw(st.one_of(_TOKEN, _QUOTABLE.map(_quoted)))}" for name in names]
        elements.append(";".join(draw(st.permutations(pairs))))
    return draw(st.sampled_from([",", ", ", " , ", ",,"])).join(elements), fors


@given(_elements())
def test_forwarded_parser_reads_every_for(field: tuple[str, list[str]]) -> None:
    value, fors = field
    assert _forwarded_nodes(value) == fors
