"""Client address resolution: trusted proxies only, right-to-left walks, and failing closed on bad headers."""

from __future__ import annotations

from typing import Any

import pytest

from geofence.addresses import address_key
from geofence.client_ip import ProxyConfig, resolve_client
from geofence.policy import parse_policy


def proxies(*trusted: str, header: str = "x-forwarded-for") -> ProxyConfig:
    policy = parse_policy({"classes": {"EAR99": {}}, "proxies": {"trusted": list(trusted), "header": header}})
    return ProxyConfig.from_networks(policy.trusted_proxies, policy.proxy_header)


def scope(peer: str | None) -> dict[str, Any]:
    return {"client": (peer, 1234) if peer else None}


def resolve(peer: str | None, config: ProxyConfig, *lines: str) -> tuple[str | None, str | None]:
    found = resolve_client(scope(peer), config, b",".join(line.encode("latin-1") for line in lines) if lines else None)
    return (found.text if found.key is not None else None), found.problem


XFF = proxies("10.0.0.0/8", "2001:db8::/32")


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
        ("10.0.0.5", ["2a00:1450::1"], "2a00:1450::1"),
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
        (["not-an-ip"], "malformed x-forwarded-for"),
        (["1.2.3.4, garbage"], "malformed x-forwarded-for"),
        (["1.2.3.4:port"], "malformed x-forwarded-for"),
        (["[2a00::1"], "malformed x-forwarded-for"),
        (["unknown"], "withheld the client address"),
        (["1.2.3.4 , "], None),
        ([","], "malformed x-forwarded-for"),
    ],
)
def test_x_forwarded_for_problems_fail_closed(lines: list[str], problem: str | None) -> None:
    client, found = resolve("10.0.0.5", XFF, *lines)
    if problem is None:
        assert client == "1.2.3.4"
    else:
        assert client is None and found is not None and problem in found  # never "use the peer instead"


def test_garbage_left_of_the_client_is_not_reached() -> None:
    # The walk stops at the first untrusted address from the right; what is left of it is the client's own text.
    assert resolve("10.0.0.5", XFF, "garbage, 1.2.3.4") == ("1.2.3.4", None)


def test_very_long_chains_are_bounded() -> None:
    chain = ", ".join(["9.9.9.9"] * 10_000 + ["1.2.3.4"])
    assert resolve("10.0.0.5", XFF, chain) == ("1.2.3.4", None)


FORWARDED = proxies("10.0.0.0/8", header="forwarded")


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        (["for=1.2.3.4"], "1.2.3.4"),
        (["For=1.2.3.4;proto=https;by=10.0.0.5"], "1.2.3.4"),
        (['for="[2a00:1450::1]:4711"'], "[2a00:1450::1]:4711"),
        (['for="1.2.3.4:80"'], "1.2.3.4:80"),
        (["for=6.6.6.6, for=1.2.3.4"], "1.2.3.4"),
        (["for=6.6.6.6", "for=1.2.3.4;host=example.com, for=10.0.0.7"], "1.2.3.4"),
        (['for=1.2.3.4;host="a,b"'], "1.2.3.4"),  # a comma inside a quoted value is not a separator
    ],
)
def test_forwarded(lines: list[str], client: str) -> None:
    assert resolve("10.0.0.5", FORWARDED, *lines) == (client, None)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["for=unknown"], "withheld"),
        (["for=_hidden"], "withheld"),
        (['for="_gazonk"'], "withheld"),
        (["proto=https"], "no for= parameter"),
        (["for=1.2.3.4;for=5.6.7.8"], "two for= parameters"),
        (['for="1.2.3.4'], "unterminated"),
        (["for=[2a00::1]"], "malformed"),  # IPv6 must be quoted
        (["for=1.2.3.4 junk"], "malformed"),
        ([], "sent no forwarded header"),
    ],
)
def test_forwarded_problems(lines: list[str], problem: str) -> None:
    client, found = resolve("10.0.0.5", FORWARDED, *lines)
    assert client is None and found is not None and problem in found


def test_xff_is_never_a_fallback_for_forwarded() -> None:
    # The operator chose Forwarded; the resolver only ever sees that header's lines.
    client, found = resolve("10.0.0.5", FORWARDED)
    assert client is None and found is not None


SINGLE = proxies("10.0.0.0/8", header="cf-connecting-ip")


def test_single_value_header() -> None:
    assert resolve("10.0.0.5", SINGLE, "1.2.3.4") == ("1.2.3.4", None)
    assert resolve("10.0.0.5", SINGLE, "2a00:1450::1") == ("2a00:1450::1", None)
    for lines in (["1.2.3.4, 5.6.7.8"], ["1.2.3.4", "5.6.7.8"], ["nope"]):
        client, problem = resolve("10.0.0.5", SINGLE, *lines)
        assert client is None and problem is not None


def test_unix_socket_peer() -> None:
    assert resolve(None, XFF, "1.2.3.4")[0] is None  # not trusted unless configured
    assert resolve(None, proxies("unix"), "1.2.3.4") == ("1.2.3.4", None)


def test_invalid_peer_from_the_server() -> None:
    client, problem = resolve("not-an-ip", XFF)
    assert client is None and problem is not None and "invalid client address" in problem


@pytest.mark.parametrize(
    ("peer", "lines", "client", "via"),
    [
        # The server (uvicorn --proxy-headers) already replaced scope["client"] with the right answer.
        ("1.2.3.4", ["6.6.6.6, 1.2.3.4"], "1.2.3.4", "server"),
        # A direct client sending a header with other addresses: the header is noise.
        ("8.8.8.8", ["1.2.3.4"], "8.8.8.8", "peer"),
    ],
)
def test_server_rewritten_client_that_agrees(peer: str, lines: list[str], client: str, via: str) -> None:
    found = resolve_client(scope(peer), XFF, ",".join(lines).encode())
    assert (found.text, found.via, found.problem) == (client, via, None)


def test_server_that_trusts_more_than_we_do_fails_closed() -> None:
    # uvicorn --forwarded-allow-ips="*" takes the leftmost address, which the caller wrote.
    found = resolve_client(scope("6.6.6.6"), XFF, b"6.6.6.6, 1.2.3.4")
    assert found.key is None and found.problem is not None and "trusts more than" in found.problem


def test_trust_check_uses_ranges() -> None:
    config = proxies("10.0.0.0/8", "192.0.2.7")
    assert config.is_trusted(address_key("10.255.255.255"))
    assert not config.is_trusted(address_key("11.0.0.0"))
    assert config.is_trusted(address_key("192.0.2.7")) and not config.is_trusted(address_key("192.0.2.8"))
    # No string-prefix matching (python-ipware's bug): 10.1 does not trust 10.100.0.0/16.
    assert not proxies("10.1.0.0/16").is_trusted(address_key("10.100.0.1"))
