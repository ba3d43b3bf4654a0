"""Other people's test cases: uvicorn's proxy-headers tests and RFC 7239's own examples, as data tables.

uvicorn (tests/middleware/test_proxy_headers.py) is both a reference for reading X-Forwarded-For and the server
most often rewriting ``scope["client"]`` in front of us, so its cases are ported twice: as what geofence
concludes from the same peer and header, and, through an emulation of its rewrite, as what geofence concludes
*after* uvicorn has already rewritten the peer. Each deliberate difference is named where it occurs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.network.addresses import address_key, key_address, parse_network
from geofence.network.client_ip import ClientAddress, ProxyConfig, resolve_client


def config(*trusted: str, header: str = "x-forwarded-for") -> ProxyConfig:
    return ProxyConfig.from_networks([parse_network(t) for t in trusted], header)


def resolve(peer: str, proxies: ProxyConfig, **headers: str) -> ClientAddress:
    encoded = {name.replace("_", "-").encode(): value.encode("latin-1") for name, value in headers.items()}
    return resolve_client({"client": (peer, 123)}, proxies, encoded)


def client_of(found: ClientAddress) -> str:
    """The client as uvicorn's tests spell it (the address), or "broken"."""
    if found.broken:
        return "broken"
    assert found.key is not None
    return key_address(found.key).text


# ---- uvicorn: which peers are trusted (test_forwarded_hosts) -------------------------------------------------
# Not ported: "*" (geofence has no trust-everything setting) and literal hosts such as "/foo/bar" (the only
# literal is "unix", for a peer with no address); both are differences by design.

_TRUSTED = {
    "nothing": [],
    "ipv4 addresses": ["127.0.0.1", "10.0.0.1"],
    "ipv4 networks": ["127.0.0.0/8", "10.0.0.0/8"],
    "ipv6 addresses": [
        "2001:db8::",
        "2001:0db8:0001:0000:0000:0ab9:C0A8:0102",
        "2001:db8:3333:4444:5555:6666:1.2.3.4",
        "::11.22.33.44",
    ],
    "ipv6 networks": ["2001:db8:abcd:0012::0/64"],
}
_HOSTS = {
    "127.0.0.0": {"ipv4 networks"},
    "127.0.0.1": {"ipv4 addresses", "ipv4 networks"},
    "127.1.1.1": {"ipv4 networks"},
    "127.255.255.255": {"ipv4 networks"},
    "10.0.0.0": {"ipv4 networks"},
    "10.0.0.1": {"ipv4 addresses", "ipv4 networks"},
    "10.1.1.1": {"ipv4 networks"},
    "10.255.255.255": {"ipv4 networks"},
    "192.168.0.0": set(),
    "192.168.0.1": set(),
    "1.1.1.1": set(),
    "2001:db8::": {"ipv6 addresses"},
    "2001:db8:abcd:0012::0": {"ipv6 networks"},
    "2001:db8:abcd:0012::1:1": {"ipv6 networks"},
    "::": set(),
    "::1": set(),
    "2001:db8:3333:4444:5555:6666:102:304": {"ipv6 addresses"},  # aka 2001:db8:3333:4444:5555:6666:1.2.3.4
    "::b16:212c": {"ipv6 addresses"},  # aka ::11.22.33.44 (IPv4-compatible: not unwrapped, by uvicorn or us)
    "a:b:c:d::": set(),
    "::a:b:c:d": set(),
    # Difference: an IPv4-mapped peer is its IPv4 address here; uvicorn compares IPv6Address to IPv4Address.
    "::ffff:127.0.0.1": {"ipv4 addresses", "ipv4 networks"},
}


@pytest.mark.parametrize("name", _TRUSTED)
@pytest.mark.parametrize("host", _HOSTS)
def test_uvicorn_trusted_hosts(name: str, host: str) -> None:
    assert config(*_TRUSTED[name]).is_trusted(address_key(host)) is (name in _HOSTS[host])


@pytest.mark.parametrize("host", ["some-literal", "unix:///foo/bar", "/foo/bar", "*", ""])
def test_uvicorn_literal_peers_are_broken(host: str) -> None:
    # Difference: uvicorn matches such peers as literals; here a peer that is not an address fails closed.
    assert resolve(host, config("127.0.0.1"), x_forwarded_for="1.2.3.4").broken


# ---- uvicorn: test_proxy_headers_trusted_hosts (peer 127.0.0.1, X-Forwarded-For: 1.2.3.4) ------------------


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (["127.0.0.1"], "1.2.3.4"),
        (["127.0.0.1", "10.0.0.1"], "1.2.3.4"),
        (["127.0.0.0/24", "10.0.0.1"], "1.2.3.4"),
        (["192.168.0.1"], "127.0.0.1"),  # request from an untrusted proxy: the peer is the client
        (["192.168.0.0/16"], "127.0.0.1"),
        (["127.0.0.1", "1.2.3.4"], "1.2.3.4"),  # a client running on the proxy: every hop trusted, the leftmost
    ],
)
def test_uvicorn_trusted_hosts_requests(trusted: list[str], expected: str) -> None:
    assert client_of(resolve("127.0.0.1", config(*trusted), x_forwarded_for="1.2.3.4")) == expected


# ---- uvicorn: test_proxy_headers_trusted_hosts_malformed (trusted 127.0.0.1, 10.0.0.0/8) ---------------------
# Difference: uvicorn falls back to the peer (127.0.0.1) when the header yields nothing usable; a trusted
# proxy that names nobody is a broken chain here, never "use the proxy's address instead". And RFC 9110 says
# empty list elements are ignored, where uvicorn stops at the first one from the right.


@pytest.mark.parametrize(
    ("forwarded_for", "uvicorn", "ours"),
    [
        ("", "127.0.0.1", "broken"),
        (" , ", "127.0.0.1", "broken"),
        (", , ", "127.0.0.1", "broken"),
        (" , 10.0.0.1", "127.0.0.1", "10.0.0.1"),  # every listed hop trusted: the leftmost started it
        ("9.9.9.9 , , , 10.0.0.1", "127.0.0.1", "9.9.9.9"),
        (", , 9.9.9.9", "9.9.9.9", "9.9.9.9"),
        (", , 9.9.9.9, , ", "127.0.0.1", "9.9.9.9"),
    ],
)
def test_uvicorn_malformed(forwarded_for: str, uvicorn: str, ours: str) -> None:
    assert _uvicorn_rewrite("127.0.0.1", forwarded_for, ["127.0.0.1", "10.0.0.0/8"]) == uvicorn
    assert client_of(resolve("127.0.0.1", config("127.0.0.1", "10.0.0.0/8"), x_forwarded_for=forwarded_for)) == ours


# ---- uvicorn: test_proxy_headers_multiple_proxies (X-Forwarded-For: 1.2.3.4, 10.0.2.1, 192.168.0.2) --------


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (["127.0.0.1", "10.0.2.1", "192.168.0.2"], "1.2.3.4"),  # all proxies trusted
        (["10.0.2.1", "192.168.0.2", "127.0.0.1"], "1.2.3.4"),  # order does not matter
        (["192.168.0.2", "127.0.0.1"], "10.0.2.1"),  # the first untrusted from the right
        (["127.0.0.1", "10.0.0.0/8", "192.168.0.2"], "1.2.3.4"),  # networks and addresses mixed
    ],
)
def test_uvicorn_multiple_proxies(trusted: list[str], expected: str) -> None:
    found = resolve("127.0.0.1", config(*trusted), x_forwarded_for="1.2.3.4, 10.0.2.1, 192.168.0.2")
    assert client_of(found) == expected


def test_uvicorn_invalid_x_forwarded_for() -> None:
    # uvicorn (trusting "*") takes the leftmost entry and never looks at the rest. Difference: geofence walks
    # from the right and stops at the first entry that is not an address.
    value = "1.2.3.4, \xf0\xfd\xfd\xfd, unix:, ::1"
    assert resolve("127.0.0.1", config("127.0.0.1", "::1"), x_forwarded_for=value).broken
    # After uvicorn --forwarded-allow-ips="*" rewrote the peer to 1.2.3.4, our own walk disagrees: broken.
    assert _uvicorn_rewrite("127.0.0.1", value, "*") == "1.2.3.4"
    assert resolve("1.2.3.4", config("127.0.0.1", "::1"), x_forwarded_for=value).broken


def test_uvicorn_empty_x_forwarded_for() -> None:
    # uvicorn keeps the peer when X-Forwarded-For is empty. Difference: an empty header from a trusted proxy is
    # a broken chain.
    assert _uvicorn_rewrite("127.0.0.1", "", "*") == "127.0.0.1"
    assert resolve("127.0.0.1", config("127.0.0.1"), x_forwarded_for="").broken


# ---- uvicorn in front of geofence ------------------------------------------------------------------------------


def _uvicorn_rewrite(peer: str, forwarded_for: str | None, trusted: list[str] | str) -> str:
    """The host uvicorn's ProxyHeadersMiddleware puts in scope["client"], from its documented behaviour: for a
    trusted peer, the first X-Forwarded-For entry from the right it does not trust (the leftmost if it trusts
    them all, or always the leftmost when it trusts "*"); an empty pick leaves the peer."""

    def trusts(host: str) -> bool:
        if trusted == "*":
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in trusted
        return any(address in ipaddress.ip_network(t) for t in trusted)

    if forwarded_for is None or not trusts(peer):
        return peer
    hosts = [host.strip() for host in forwarded_for.split(",")]
    if trusted == "*":
        picked = hosts[0]
    else:
        picked = next((host for host in reversed(hosts) if not trusts(host)), hosts[0])
    return picked or peer


_POOL = ["1.2.3.4", "6.6.6.6", "10.0.0.1", "10.0.0.2", "127.0.0.1", "192.168.0.2", "2001:db8::1", "::1"]
_NETWORKS = ["127.0.0.1", "10.0.0.0/8", "10.0.0.2", "192.168.0.2", "2001:db8::/32", "::1"]
_ENTRIES = st.sampled_from([*_POOL, "unknown", "garbage", "1.2.3.4:80", "[::1]", ""])


@given(
    peer=st.sampled_from(_POOL),
    entries=st.lists(_ENTRIES, min_size=1, max_size=5),
    ours=st.lists(st.sampled_from(_NETWORKS), unique=True),
    theirs=st.one_of(st.just("*"), st.lists(st.sampled_from(_NETWORKS), unique=True)),
)
def test_a_rewrite_changes_the_answer_only_when_the_server_trusts_a_peer_we_do_not(
    peer: str, entries: list[str], ours: list[str], theirs: list[str] | str
) -> None:
    """Compare what geofence concludes from the real TCP peer with what it concludes after uvicorn rewrote it.
    Either they agree, or the rewrite is refused (broken), or uvicorn trusted a peer [proxies] does not:
    the undetectable case of the client_ip module docstring, which only --no-proxy-headers avoids."""
    value = ", ".join(entries)
    proxies = config(*ours)
    direct = resolve(peer, proxies, x_forwarded_for=value)
    after = resolve(_uvicorn_rewrite(peer, value, theirs), proxies, x_forwarded_for=value)
    if after.broken or (after.key, after.broken) == (direct.key, direct.broken):
        return
    assert _uvicorn_rewrite(peer, value, theirs) != peer and not proxies.is_trusted(address_key(peer))
    # ... and then the address is the one our own walk of the header picks, as if the peer were trusted.
    as_proxy = resolve(peer, config(*ours, peer), x_forwarded_for=value)
    assert after.key == as_proxy.key


@given(
    peer=st.sampled_from(_POOL),
    entries=st.lists(_ENTRIES, min_size=1, max_size=5),
    ours=st.lists(st.sampled_from(_NETWORKS), unique=True),
    data=st.data(),
)
def test_a_server_trusting_no_more_than_we_do_never_changes_the_answer(
    peer: str, entries: list[str], ours: list[str], data: Any
) -> None:
    """With --forwarded-allow-ips a subset of [proxies] trusted (uvicorn's default, 127.0.0.1, is a subset of
    any [proxies] that trusts 127.0.0.1), the rewrite never changes the client. It is refused only when uvicorn
    copied an entry that is not an address (``1.2.3.4:80``, ``unknown``) into scope["client"]."""
    theirs = data.draw(st.lists(st.sampled_from(ours), unique=True)) if ours else []
    value = ", ".join(entries)
    proxies = config(*ours)
    direct = resolve(peer, proxies, x_forwarded_for=value)
    rewritten = _uvicorn_rewrite(peer, value, theirs)
    after = resolve(rewritten, proxies, x_forwarded_for=value)
    if after.broken and not direct.broken:
        assert after.problem is not None and "invalid client address" in after.problem, rewritten
    else:
        assert (after.key, after.broken) == (direct.key, direct.broken)


# ---- RFC 7239 ------------------------------------------------------------------------------------------------
# The peer is always 10.0.0.5, a trusted proxy; "extra" lists further trusted proxies.


@pytest.mark.parametrize(
    ("section", "forwarded", "extra", "expected"),
    [
        ("4", 'for="_gazonk"', [], "broken"),  # obfuscated: the proxy withheld the client
        ("4", 'For="[2001:db8:cafe::17]:4711"', [], "2001:db8:cafe::17"),
        ("4", "for=192.0.2.60;proto=http;by=203.0.113.43", [], "192.0.2.60"),
        ("4", "for=192.0.2.43, for=198.51.100.17", [], "198.51.100.17"),
        ("4", "for=192.0.2.43, for=198.51.100.17", ["198.51.100.17"], "192.0.2.43"),
        ("6", 'for="192.0.2.43:47011"', [], "192.0.2.43"),
        ("6", 'for="[2001:db8:cafe::17]:47011"', [], "2001:db8:cafe::17"),
        ("6.1", 'for="[2001:db8:cafe::17]"', [], "2001:db8:cafe::17"),
        ("6.1", 'for="2001:db8:cafe::17"', [], "broken"),  # IPv6 must be in brackets ...
        ("6.1", "for=[2001:db8:cafe::17]", [], "broken"),  # ... and quoted (":" is not a token character)
        ("6.1", "for=192.0.2.43:47011", [], "broken"),  # a port needs quoting too
        ("6.2", "for=unknown", [], "broken"),
        ("6.3", "for=_hidden, for=_SEVKISEK", [], "broken"),
        ("6.3", 'for="192.0.2.43:_p1"', [], "192.0.2.43"),  # obfport: the address is still disclosed
        ("6.3", 'for="[2001:db8:cafe::17]:_abc"', [], "2001:db8:cafe::17"),
        ("6.3", 'for="_hidden:_p1"', [], "broken"),
        ("7.1", 'for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown', [], "broken"),
        ("7.1", 'for=192.0.2.43, for="[2001:db8:cafe::17]", for=unknown', [], "broken"),
        ("7.1", 'for=192.0.2.43, for="[2001:db8:cafe::17]"', [], "2001:db8:cafe::17"),
        ("7.1", 'for=192.0.2.43, for="[2001:db8:cafe::17]"', ["2001:db8:cafe::/48"], "192.0.2.43"),
        ("7.5", "for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com", [], "198.51.100.17"),
        (
            "7.5",
            "for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com",
            ["198.51.100.17"],
            "192.0.2.43",
        ),
    ],
)
def test_rfc_7239_examples(section: str, forwarded: str, extra: list[str], expected: str) -> None:
    proxies = config("10.0.0.0/8", *extra, header="forwarded")
    assert client_of(resolve("10.0.0.5", proxies, forwarded=forwarded)) == expected, section


def test_rfc_7239_7_1_header_lines_are_one_list() -> None:
    one = 'for=192.0.2.43, for="[2001:db8:cafe::17]"'
    two = ["for=192.0.2.43", 'for="[2001:db8:cafe::17]"']
    proxies = config("10.0.0.0/8", header="forwarded")
    assert resolve("10.0.0.5", proxies, forwarded=one) == resolve("10.0.0.5", proxies, forwarded=",".join(two))


@pytest.mark.parametrize("trusted", [[], ["2001:db8:cafe::17"]])
def test_rfc_7239_7_4_transition_from_x_forwarded_for(trusted: list[str]) -> None:
    # The same chain in both headers names the same client.
    xff = resolve("10.0.0.5", config("10.0.0.0/8", *trusted), x_forwarded_for="192.0.2.43, 2001:db8:cafe::17")
    forwarded = resolve(
        "10.0.0.5",
        config("10.0.0.0/8", *trusted, header="forwarded"),
        forwarded='for=192.0.2.43, for="[2001:db8:cafe::17]"',
    )
    assert xff.key == forwarded.key is not None and not xff.broken
