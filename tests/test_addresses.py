from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geofence.errors import InvalidAddressError
from geofence.network.addresses import V4_BASE, address_key, format_network, parse_address, parse_network, special_range


@pytest.mark.parametrize(
    ("text", "canonical", "version"),
    [
        ("8.8.8.8", "8.8.8.8", 4),
        ("::ffff:8.8.8.8", "8.8.8.8", 4),
        ("::FFFF:0808:0808", "8.8.8.8", 4),
        ("2001:4860:4860:0000:0000:0000:0000:8888", "2001:4860:4860::8888", 6),
        ("2001:DB8::1", "2001:db8::1", 6),
        ("fe80::1%eth0", "fe80::1", 6),
        ("fe80::1%25", "fe80::1", 6),
        ("::", "::", 6),
    ],
)
def test_parse_normalises(text: str, canonical: str, version: int) -> None:
    address = parse_address(text)
    assert (address.text, address.version) == (canonical, version)
    assert address_key(text) == address.key


def test_ipv4_and_mapped_share_a_key() -> None:
    assert address_key("1.2.3.4") == address_key("::ffff:1.2.3.4") == V4_BASE | 0x01020304


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 8.8.8.8",
        "8.8.8.8 ",
        "8.8.8",
        "08.8.8.8",  # leading zeros: octal to some parsers, decimal to others
        "8.8.8.256",
        "0x8.8.8.8",
        "8.8.8.8:443",
        "[2001:db8::1]",
        "[2001:db8::1]:443",
        "2001:db8::1%",  # empty zone id
        "2001:db8:::1",
        "1.2.3.4\x00",
        "unknown",
        "x" * 10_000,
    ],
)
def test_garbage_is_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidAddressError, match="is not a valid IP address"):
        parse_address(text)
    with pytest.raises(InvalidAddressError):
        address_key(text)


def test_long_garbage_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_address("9" * 10_000)
    assert len(str(info.value)) < 120


@pytest.mark.parametrize("value", [None, 123, b"8.8.8.8"])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidAddressError, match="expected an IP address string"):
        address_key(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.1.2.3", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.8", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::1.2.3.4", "reserved"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1%eth0", "link_local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("2001::1", "reserved"),  # Teredo
        ("2001:2::1", "benchmarking"),
        ("64:ff9b:1::1", "private"),
        ("100::1", "reserved"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_special_purpose_ranges(text: str, reason: str) -> None:
    found, first, last = special_range(address_key(text))
    assert found is not None and found.reason == reason
    assert first <= address_key(text) <= last


@pytest.mark.parametrize(
    "text",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.0",
        "192.0.0.9",  # globally reachable assignment inside 192.0.0.0/24
        "192.0.0.10",
        "223.255.255.255",
        "2001:4860:4860::8888",
        "2001:3::1",  # AMT, globally reachable inside 2001::/23
        "2001:20::1",
        "2002:808:808::1",  # 6to4: geolocated as the embedded IPv4 by MaxMind databases
        "64:ff9b::808:808",  # well-known NAT64 prefix is global
        "abcd:1000::1",
    ],
)
def test_global_addresses_are_not_special(text: str) -> None:
    key = address_key(text)
    found, low, high = special_range(key)
    assert found is None
    assert low <= key <= high
    # The gap bounds really are free of special ranges.
    assert special_range(low)[0] is None and special_range(high)[0] is None
    if low > 0:
        assert special_range(low - 1)[0] is not None
    if high < (1 << 128) - 1:
        assert special_range(high + 1)[0] is not None


def test_table_agrees_with_ipaddress_on_ipv4() -> None:
    """Every IPv4 block the table marks special is non-global for the standard library too."""
    for text in [
        "0.0.0.1",
        "10.1.1.1",
        "100.64.1.1",
        "127.1.1.1",
        "169.254.1.1",
        "172.16.1.1",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.1.1",
        "198.51.100.1",
        "203.0.113.1",
        "240.1.1.1",
    ]:
        assert not ipaddress.ip_address(text).is_global
        assert special_range(address_key(text))[0] is not None


@pytest.mark.parametrize(
    ("text", "prefix", "network"),
    [
        ("8.8.8.8", 96 + 17, "8.8.0.0/17"),
        ("8.8.8.8", 96 + 32, "8.8.8.8/32"),
        ("8.8.8.8", 96, "0.0.0.0/0"),
        ("2001:4860:4860::8888", 42, "2001:4860:4840::/42"),
        ("2001:4860:4860::8888", 0, "::/0"),
        ("2001:4860:4860::8888", 128, "2001:4860:4860::8888/128"),
    ],
)
def test_format_network(text: str, prefix: int, network: str) -> None:
    assert format_network(address_key(text), prefix) == network


@pytest.mark.parametrize(
    ("text", "embedded"),
    [
        ("2002:af2d:b001::1", "175.45.176.1"),  # 6to4 carries the client's IPv4 address
        ("2002:a00:1::1", "10.0.0.1"),
        ("64:ff9b::808:808", "8.8.8.8"),  # NAT64 well-known prefix (SIIT-DC)
        ("64:ff9b::10.1.2.3", "10.1.2.3"),
    ],
)
def test_embedded_ipv4_is_unwrapped(text: str, embedded: str) -> None:
    address = parse_address(text)
    assert (address.text, address.version) == (embedded, 4)
    assert address_key(text) == address_key(embedded)


@pytest.mark.parametrize("text", ["fe80::1%x%y", "fe80::1%eth0\nFAKE", "fe80::1%" + "a" * 40, "fe80::1%e th"])
def test_bad_zone_ids(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        parse_address(text)
    with pytest.raises(InvalidAddressError):
        address_key(text)


def test_rfc_9780_dummy_prefix_is_reserved() -> None:
    found = special_range(address_key("100:0:0:1::5"))[0]
    assert found is not None and found.reason == "reserved"


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
        ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ("0.0.0.0/0", "0.0.0.0", "255.255.255.255"),
        ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        # IPv6 networks that carry IPv4 mean the IPv4 network they carry: their addresses are keyed that way.
        ("::ffff:10.0.0.0/104", "10.0.0.0", "10.255.255.255"),
        ("::ffff:192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ("64:ff9b::a00:0/104", "10.0.0.0", "10.255.255.255"),
        ("64:ff9b::192.0.2.7/128", "192.0.2.7", "192.0.2.7"),
        ("2002:a00::/24", "10.0.0.0", "10.255.255.255"),  # 2002::/16 + n bits is IPv4 /n
        ("2002:c000:200::/40", "192.0.2.0", "192.0.2.255"),
        ("2002:c000:207::/48", "192.0.2.7", "192.0.2.7"),
        # Networks that contain the IPv4 block contain every address that unwraps into it.
        ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("::/1", "::", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("::/64", "::", "::ffff:ffff:ffff:ffff"),
        ("::/96", "::", "::255.255.255.255"),  # IPv4-compatible (deprecated) is not unwrapped
        ("64:ff9b:1::/48", "64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),  # local-use NAT64 is not either
    ],
)
def test_parse_network(text: str, first: str, last: str) -> None:
    low, high, shown = parse_network(text)
    assert (parse_address(first).key, parse_address(last).key, shown) == (low, high, text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.1/8", "has host bits set"),
        ("::ffff:10.0.0.0/8", "has host bits set"),  # an IPv6 prefix, not an IPv4 one
        ("10.0.0.0/33", "prefix length must be 0-32"),
        ("10.0.0.0/", "prefix length must be 0-32"),
        ("10.0.0.0/\u00b2", "prefix length must be 0-32"),
        ("2001:db8::/129", "prefix length must be 0-128"),
        ("not-a-net", "is not an IP network"),
        ("2002:a00:1::/64", "inside the 6to4 site 2002:a00:1::/48"),  # every address in it is 10.0.0.1
        ("2002:a00:1::1", "write '10.0.0.1'"),
        ("2000::/3", "contains 2002::/16"),  # its 6to4 part would be IPv4 keys outside the range
        ("2002::/15", "contains 2002::/16"),
        ("64::/16", "contains 64:ff9b::/96"),
        ("64:ff9b::/64", "contains 64:ff9b::/96"),
        # A whole carrier block reads like an IPv6 range but means every IPv4 client: say so, write 0.0.0.0/0.
        ("2002::/16", "0.0.0.0/0, which is most or all of IPv4"),
        ("64:ff9b::/96", "0.0.0.0/0, which is most or all of IPv4"),
        ("::ffff:0:0/96", "0.0.0.0/0, which is most or all of IPv4"),
        ("2002:800::/21", "8.0.0.0/5, which is most or all of IPv4"),
    ],
)
def test_parse_network_problems(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_network(text)
    assert str(info.value).startswith(repr(text)) and problem in str(info.value)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _same_client(address: ipaddress.IPv6Address) -> list[ipaddress.IPv6Network]:
    """Every IPv6 address keyed like *address*, as networks: itself, or all the forms of the IPv4 it carries."""
    v4 = address.ipv4_mapped or address.sixtofour
    if v4 is None and address in _NAT64:
        v4 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if v4 is None:
        return [ipaddress.ip_network(address)]
    return [
        ipaddress.ip_network(f"::ffff:{v4}"),
        ipaddress.ip_network(f"64:ff9b::{v4}"),
        ipaddress.ip_network(f"2002:{int(v4) >> 16:x}:{int(v4) & 0xFFFF:x}::/48"),
    ]


_BASES = st.sampled_from([0, V4_BASE, 0x64FF9B << 96, 0x2002 << 112, 0x20010DB8 << 96, 0x64 << 112])
_NEAR_A_BASE = st.builds(
    lambda base, bits, shift: base ^ bits >> shift, _BASES, st.integers(0, (1 << 128) - 1), st.integers(0, 128)
)


_PREFIXES = st.one_of(st.integers(0, 128), st.sampled_from([15, 16, 17, 24, 40, 48, 49, 95, 96, 97, 104, 128]))


@settings(max_examples=1000)
@given(_NEAR_A_BASE, _PREFIXES, _NEAR_A_BASE, st.booleans())
@example(0x2002_0A00 << 96, 24, 0x2002_0A01 << 96, True)  # 2002:a00::/24 is 10.0.0.0/8, not 10.0.0.0/24
@example(0x64FF9B << 96, 96, 0x64FF9B << 96 | 0x08080808, True)
def test_network_ranges_match_exactly_the_addresses_keyed_into_them(
    base: int, prefix: int, bits: int, inside: bool
) -> None:
    """A network's range holds the key of every address in it, and only keys of clients it contains."""
    network = ipaddress.IPv6Network((base >> (128 - prefix) << (128 - prefix), prefix))
    try:
        first, last, _ = parse_network(network.with_prefixlen)
    except ValueError:
        return
    address = ipaddress.IPv6Address(int(network.network_address) | (bits & int(network.hostmask)) if inside else bits)
    key = address_key(str(address))
    if address in network:
        assert first <= key <= last
    if first <= key <= last:
        assert any(network.overlaps(form) for form in _same_client(address))
