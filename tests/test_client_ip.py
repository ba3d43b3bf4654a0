"""Client address resolution: trusted proxies only, right-to-left walks, broken chains, server rewrites."""

from __future__ import annotations

from typing import Any

import pytest

from geofence.network.addresses import address_key, parse_network
from geofence.network.client_ip import ClientAddress, ProxyConfig, resolve_client
from geofence.policy.load import parse_policy


def proxies(*trusted: str, header: str = "x-forwarded-for") -> ProxyConfig:
    policy = parse_policy({"classes": {"EAR99": {}}, "proxies": {"trusted": list(trusted), "header": header}})
    return ProxyConfig.from_networks(policy.trusted_proxies, policy.proxy_header)


def scope(peer: str | None) -> dict[str, Any]:
    return {"client": (peer, 1234) if peer else None}


def run(peer: str | None, config: ProxyConfig, *lines: str, **others: str) -> ClientAddress:
    """Resolve with *lines* of the configured header and *others* (x_forwarded_for=...) as further headers."""
    headers = {name.replace("_", "-").encode(): value.encode("latin-1") for name, value in others.items()}
    if lines:
        headers[config.watched[0]] = b",".join(line.encode("latin-1") for line in lines)
    found = resolve_client(scope(peer), config, headers)
    assert (found.key is None) == (found.text is None)
    assert not found.broken or (found.key is None and found.problem)
    return found


def resolve(peer: str | None, config: ProxyConfig, *lines: str) -> tuple[str | None, str | None]:
    found = run(peer, config, *lines)
    return found.text, found.problem


XFF = proxies("10.0.0.0/8", "2001:db8::/32")
NO_PROXIES = ProxyConfig()


@pytest.mark.parametrize(
    ("peer", "lines", "client"),
    [
        ("8.8.8.8", [], "8.8.8.8"),  # no proxy
        ("8.8.8.8", ["1.2.3.4"], "8.8.8.8"),  # an untrusted peer's header is ignored
        ("10.0.0.5", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # a forged leftmost entry is not believed
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # skip trusted hops from the right
        ("10.0.0.5", ["6.6.6.6", "1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # several header lines are one list
        ("10.0.0.5", ["10.0.0.9, 10.0.0.7"], "10.0.0.9"),  # all trusted: the leftmost
        ("10.0.0.5", ["1.2.3.4:5678"], "1.2.3.4:5678"),  # a port is dropped
        ("10.0.0.5", ["[2a00:1450::1]:443"], "[2a00:1450::1]:443"),
        ("10.0.0.5", ["[2a00:1450::1]"], "[2a00:1450::1]"),
        ("10.0.0.5", ["2a00:1450::1"], "2a00:1450::1"),  # X-Forwarded-For has no standard: bare IPv6 is usual
        ("10.0.0.5", ["::ffff:1.2.3.4"], "::ffff:1.2.3.4"),
        ("10.0.0.5", ["  1.2.3.4 ,, "], "1.2.3.4"),  # whitespace and empty list elements
        ("2001:db8::5", ["1.2.3.4"], "1.2.3.4"),  # an IPv6 proxy
        ("::ffff:10.0.0.5", ["1.2.3.4"], "1.2.3.4"),  # a proxy seen as IPv4-mapped
        ("fe80::1%eth0", ["1.2.3.4"], "fe80::1%eth0"),  # link-local peer is not a trusted proxy
    ],
)
def test_x_forwarded_for(peer: str, lines: list[str], client: str) -> None:
    assert resolve(peer, XFF, *lines) == (client, None)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "trusted proxy sent no x-forwarded-for header"),
        ([""], "malformed x-forwarded-for: empty"),
        (["  "], "malformed x-forwarded-for: empty"),
        ([","], "malformed x-forwarded-for: empty"),
        (["not-an-ip"], "malformed x-forwarded-for"),
        (["1.2.3.4, garbage"], "malformed x-forwarded-for"),
        (["1.2.3.4:port"], "invalid port"),
        (["1.2.3.4:\u00b2"], "invalid port"),  # str.isdigit() says yes to a superscript two
        (["1.2.3.4:123456"], "invalid port"),
        (["[2a00::1"], "malformed x-forwarded-for"),
        (["[1.2.3.4]"], "malformed x-forwarded-for"),  # brackets are for IPv6
        (["[2a00::1]443"], "malformed x-forwarded-for"),
        (["unknown"], "withheld the client address"),
        (["1.2.3.4, _hidden"], "withheld the client address"),
    ],
)
def test_x_forwarded_for_problems_are_broken(lines: list[str], problem: str) -> None:
    found = run("10.0.0.5", XFF, *lines)
    assert found.broken and found.problem is not None and problem in found.problem  # never "use the peer"


def test_garbage_left_of_the_client_is_not_reached() -> None:
    # The walk stops at the first untrusted address from the right; what is left of it is the client's own text.
    assert resolve("10.0.0.5", XFF, "garbage, 1.2.3.4") == ("1.2.3.4", None)


def test_headers_longer_than_the_limit_are_broken() -> None:
    chain = ", ".join(["9.9.9.9"] * 10_000 + ["1.2.3.4"])
    found = run("10.0.0.5", XFF, chain)
    assert found.broken and found.problem == "x-forwarded-for is longer than 4096 bytes"
    small = ProxyConfig.from_networks([parse_network("10.0.0.0/8")], "x-forwarded-for", max_header_bytes=20)
    assert run("10.0.0.5", small, "1.2.3.4, 5.6.7.8").text == "5.6.7.8"  # 16 bytes
    assert run("10.0.0.5", small, "1.2.3.4, 5.6.7.8, 9.9.9.9").broken


def test_long_chains_of_trusted_hops_are_walked_to_the_end() -> None:
    # Within the byte limit every hop counts: the client is never a proxy picked by a hop cap.
    chain = ", ".join(["1.2.3.4"] + [f"10.0.0.{i}" for i in range(1, 101)])
    assert resolve("10.0.0.5", XFF, chain) == ("1.2.3.4", None)


FORWARDED = proxies("10.0.0.0/8", header="forwarded")


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        (["for=1.2.3.4"], "1.2.3.4"),
        (["For=1.2.3.4;proto=https;by=10.0.0.5"], "1.2.3.4"),
        (['for="[2a00:1450::1]:4711"'], "[2a00:1450::1]:4711"),
        (['for="[2a00:1450::1]"'], "[2a00:1450::1]"),
        (['for="1.2.3.4:80"'], "1.2.3.4:80"),
        (['for="192.0.2.43:_p1"'], "192.0.2.43:_p1"),  # obfuscated port: the address is still given
        (['for="[2001:db8::1]:_abc"'], "[2001:db8::1]:_abc"),
        (["for=6.6.6.6, for=1.2.3.4"], "1.2.3.4"),
        (["for=6.6.6.6", "for=1.2.3.4;host=example.com, for=10.0.0.7"], "1.2.3.4"),
        (['for=1.2.3.4;host="a,b"'], "1.2.3.4"),  # a comma inside a quoted value is not a separator
        (['for="1.2.3.\\4"'], "1.2.3.4"),  # quoted-pair
    ],
)
def test_forwarded(lines: list[str], client: str) -> None:
    assert resolve("10.0.0.5", FORWARDED, *lines) == (client, None)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["for=unknown"], "withheld"),
        (["for=UNKNOWN"], "withheld"),
        (['for="unknown:4711"'], "withheld"),
        (["for=_hidden"], "withheld"),
        (['for="_gazonk"'], "withheld"),
        (['for="_gazonk:_p1"'], "withheld"),
        (["proto=https"], "no for= parameter"),
        (["for=1.2.3.4;for=5.6.7.8"], "two for= parameters"),
        (['for="1.2.3.4'], "unterminated"),
        (["for=[2a00::1]"], "malformed"),  # IPv6 must be quoted
        (["for=2001:db8::1"], "malformed"),
        (['for="2001:db8::1"'], "must be bracketed"),  # and bracketed (RFC 7239 section 6)
        (['for="::ffff:1.2.3.4"'], "must be bracketed"),
        (['for="1.2.3.4:"'], "invalid port"),
        (['for="_bad!"'], "malformed"),  # not an obfuscated identifier either
        (["for=1.2.3.4 junk"], "malformed"),
        ([""], "empty"),
        ([], "sent no forwarded header"),
    ],
)
def test_forwarded_problems_are_broken(lines: list[str], problem: str) -> None:
    found = run("10.0.0.5", FORWARDED, *lines)
    assert found.broken and found.problem is not None and problem in found.problem


def test_xff_is_never_a_fallback_for_forwarded() -> None:
    found = run("10.0.0.5", FORWARDED, x_forwarded_for="1.2.3.4")
    assert found.broken and found.problem == "trusted proxy sent no forwarded header"


SINGLE = proxies("10.0.0.0/8", header="cf-connecting-ip")


def test_single_value_header() -> None:
    assert resolve("10.0.0.5", SINGLE, "1.2.3.4") == ("1.2.3.4", None)
    assert resolve("10.0.0.5", SINGLE, "2a00:1450::1") == ("2a00:1450::1", None)
    for lines in (["1.2.3.4, 5.6.7.8"], ["1.2.3.4", "5.6.7.8"], ["nope"], [""]):
        assert run("10.0.0.5", SINGLE, *lines).broken


def test_unix_socket_peer() -> None:
    assert run(None, XFF) == ClientAddress(None, None, "no client address (Unix socket peer not in [proxies] trusted)")
    # A Unix socket peer that forwards is a proxy nobody trusted: not a client with an unknown location.
    assert run(None, XFF, "1.2.3.4").broken
    assert resolve(None, proxies("unix"), "1.2.3.4") == ("1.2.3.4", None)
    assert run(None, proxies("unix")).broken


def test_rewrite_behind_a_trusted_unix_socket_proxy_is_checked_not_refused() -> None:
    """uvicorn --uds trusts a Unix peer only with --forwarded-allow-ips="*", and then rewrites the client:
    with [proxies] trusted = ["unix"], geofence's own walk can still confirm (or refuse) that rewrite."""
    unix = proxies("unix")
    agreed = run("1.2.3.4", unix, "1.2.3.4")
    assert (agreed.text, agreed.via, agreed.broken) == ("1.2.3.4", "server", False)
    assert run("6.6.6.6", unix, "6.6.6.6, 1.2.3.4").broken  # took the forged leftmost entry: refused


@pytest.mark.parametrize("peer", ["testclient", "1.2.3.4:80", "[::1]", "unknown", ""])
def test_invalid_peer_from_the_server(peer: str) -> None:
    # Alone it is a client without a location (Starlette's TestClient says "testclient") ...
    found = resolve_client({"client": (peer, 0)}, XFF, {})
    assert (found.key, found.broken) == (None, False) and found.problem is not None
    assert "invalid client address" in found.problem
    # ... but with forwarding headers it may be an entry a server copied from them (uvicorn copies any string).
    found = resolve_client({"client": (peer, 0)}, NO_PROXIES, {b"x-forwarded-for": f"{peer}, 1.2.3.4".encode()})
    assert found.broken and found.problem is not None and "invalid client address" in found.problem


@pytest.mark.parametrize(
    ("config", "peer", "headers", "client"),
    [
        # The server (uvicorn --proxy-headers) replaced scope["client"] with what our own walk gives.
        (XFF, "1.2.3.4", {"x_forwarded_for": "6.6.6.6, 1.2.3.4"}, "server"),
        (XFF, "1.2.3.4", {"x_forwarded_for": "6.6.6.6, 1.2.3.4, 10.0.0.7"}, "server"),
        (XFF, "1.2.3.4", {"x_forwarded_for": "8.8.8.8, x, 1.2.3.4"}, "server"),
        (SINGLE, "1.2.3.4", {"cf_connecting_ip": "1.2.3.4", "x_forwarded_for": "1.2.3.4"}, "server"),
        # Header and Forwarded both name the peer: the configured one decides (see the module docstring).
        (FORWARDED, "1.2.3.4", {"forwarded": "for=1.2.3.4", "x_forwarded_for": "1.2.3.4"}, "server"),
        # The peer is listed nowhere: a client sending headers of its own, which are noise.
        (XFF, "8.8.8.8", {"x_forwarded_for": "1.2.3.4"}, "peer"),
        (NO_PROXIES, "8.8.8.8", {"x_forwarded_for": "1.2.3.4", "forwarded": "for=5.6.7.8"}, "peer"),
        # Any spelling of the peer anywhere counts (even by=): reading more leniently than every server is what
        # keeps a server's lenient rewrite visible; a client naming its own address only denies itself.
        (NO_PROXIES, "8.8.8.8", {"forwarded": "for=1.2.3.4;by=8.8.8.8"}, "broken"),
        (NO_PROXIES, "8.8.8.8", {"x_forwarded_for": "[8.8.8.8]"}, "broken"),  # uvicorn strips the brackets
        (NO_PROXIES, "8.8.8.8", {"x_forwarded_for": "8.8.8.8:+80"}, "broken"),  # and takes int("+80")
        (NO_PROXIES, "8.8.8.8", {"x_forwarded_for": "8.8.8.8:1_0"}, "broken"),
        (NO_PROXIES, "8.8.8.8", {"x_forwarded_for": "8.8.8.8:123456"}, "broken"),
        (XFF, "8.8.8.8", {"x_forwarded_for": "[8.8.8.8]:80"}, "broken"),
        # A trust-everything server took the leftmost address, which the caller wrote.
        (XFF, "6.6.6.6", {"x_forwarded_for": "6.6.6.6, 1.2.3.4"}, "broken"),
        # One unparseable entry does not hide the rest (the old check gave up and accepted the peer).
        (XFF, "8.8.8.8", {"x_forwarded_for": "8.8.8.8, x, 1.2.3.4"}, "broken"),
        (XFF, "8.8.8.8", {"x_forwarded_for": "8.8.8.8, [bad, unknown, 1.2.3.4"}, "broken"),
        # Nothing trusted at all: any rewrite is one the operator did not ask for.
        (NO_PROXIES, "1.2.3.4", {"x_forwarded_for": "1.2.3.4"}, "broken"),
        (NO_PROXIES, "1.2.3.4", {"forwarded": 'for="1.2.3.4:80"'}, "broken"),
        # The server read a header other than the configured one.
        (FORWARDED, "1.2.3.4", {"x_forwarded_for": "1.2.3.4"}, "broken"),
        (FORWARDED, "1.2.3.4", {"x_forwarded_for": "1.2.3.4", "forwarded": "for=5.6.7.8"}, "broken"),
        (SINGLE, "1.2.3.4", {"x_forwarded_for": "1.2.3.4"}, "broken"),
        (SINGLE, "1.2.3.4", {"x_forwarded_for": "1.2.3.4", "cf_connecting_ip": "5.6.7.8"}, "broken"),
        (XFF, "1.2.3.4", {"forwarded": "for=1.2.3.4"}, "broken"),
        # Our own walk of the configured header is broken: nothing confirms the rewrite.
        (XFF, "1.2.3.4", {"x_forwarded_for": "1.2.3.4, unknown"}, "broken"),
        (XFF, "1.2.3.4", {"x_forwarded_for": "1.2.3.4, bad"}, "broken"),
        # Compared as addresses, not text.
        (NO_PROXIES, "::ffff:1.2.3.4", {"x_forwarded_for": "1.2.3.4"}, "broken"),
        (NO_PROXIES, "1.2.3.4", {"x_forwarded_for": "::FFFF:102:304"}, "broken"),
        (NO_PROXIES, "2001:db8::1", {"x_forwarded_for": "2001:DB8:0::1"}, "broken"),
        (NO_PROXIES, "2001:db8::1", {"forwarded": 'for="[2001:db8::1]:443"'}, "broken"),
        (NO_PROXIES, "2001:db8::1", {"forwarded": 'for="2001:db8::1"'}, "broken"),  # invalid, but a server may read it
        (NO_PROXIES, "1.2.3.4", {"x_forwarded_for": "1.2.3.4:5678"}, "broken"),
        (NO_PROXIES, "1.2.3.4", {"forwarded": "for=1.2.3.4 junk, for=5.6.7.8"}, "broken"),
    ],
)
def test_server_rewritten_peer(config: ProxyConfig, peer: str, headers: dict[str, str], client: str) -> None:
    found = run(peer, config, **headers)
    if client == "broken":
        assert found.broken and found.problem is not None
        assert "--no-proxy-headers" in found.problem and "[proxies]" in found.problem
    else:
        assert (found.text, found.via, found.problem, found.broken) == (peer, client, None, False)


def test_rewrite_problems_say_what_disagrees() -> None:
    found = run("6.6.6.6", XFF, x_forwarded_for="6.6.6.6, 1.2.3.4")
    assert found.problem is not None and "names '1.2.3.4'" in found.problem
    found = run("1.2.3.4", NO_PROXIES, x_forwarded_for="1.2.3.4")
    assert found.problem is not None and "[proxies] trusts no proxy address" in found.problem
    found = run("1.2.3.4", FORWARDED, x_forwarded_for="1.2.3.4")
    assert found.problem is not None and "no forwarded header" in found.problem


def test_an_oversized_header_from_an_untrusted_peer_is_broken() -> None:
    # Scanning it for the peer would be unbounded work; a client has no reason to send 4 KB of forwarding.
    found = run("8.8.8.8", XFF, forwarded="for=1.2.3.4, " * 400)
    assert found.broken and found.problem is not None and "longer than 4096 bytes" in found.problem


def test_watched_headers() -> None:
    assert NO_PROXIES.watched == (b"x-forwarded-for", b"forwarded")  # even when nothing is trusted
    assert FORWARDED.watched == (b"forwarded", b"x-forwarded-for")
    assert ProxyConfig(header="CF-Connecting-IP").watched == (b"cf-connecting-ip", b"x-forwarded-for", b"forwarded")
    assert ProxyConfig(header="CF-Connecting-IP") == ProxyConfig(header="cf-connecting-ip")


def test_trust_check_uses_ranges() -> None:
    config = proxies("10.0.0.0/8", "192.0.2.7")
    assert config.is_trusted(address_key("10.255.255.255"))
    assert not config.is_trusted(address_key("11.0.0.0"))
    assert config.is_trusted(address_key("192.0.2.7")) and not config.is_trusted(address_key("192.0.2.8"))
    # No string-prefix matching (python-ipware's bug): 10.1 does not trust 10.100.0.0/16.
    assert not proxies("10.1.0.0/16").is_trusted(address_key("10.100.0.1"))


def test_6to4_and_nat64_proxies_are_trusted_by_the_ipv4_they_carry() -> None:
    config = proxies("2002:a00::/24", "64:ff9b::c000:200/120")  # 10.0.0.0/8 and 192.0.2.0/24
    for peer in ("10.1.2.3", "2002:a01:203::1", "64:ff9b::a01:203", "192.0.2.9", "::ffff:192.0.2.9"):
        assert resolve(peer, config, "1.2.3.4") == ("1.2.3.4", None), peer
