"""Interoperability with MaxMind's official test databases (../shared/testdata/maxmind, MIT/Apache).

For every network in each JSON source, an address inside it (and not inside a more specific network of the same
source) must resolve to the JSON's country, subdivisions and anonymizer flags, and agree with MaxMind's own
``geoip2`` reader. The broken databases must give a clear DatabaseError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import geoip2.database
import pytest
from netaddr import IPNetwork, IPSet

from geofence import Anonymizer, DatabaseError, Locator
from geofence.geoip.databases import open_database
from geofence.network.addresses import address_key, special_range

from .conftest import MAXMIND_TESTDATA

pytestmark = pytest.mark.skipif(
    not MAXMIND_TESTDATA.is_dir(), reason=f"MaxMind test data not found at {MAXMIND_TESTDATA}"
)

GEO = ["GeoIP2-City-Test", "GeoIP2-Country-Test", "GeoIP2-Enterprise-Test", "GeoLite2-Country-Test"]
ANONYMOUS = ["GeoIP2-Anonymous-IP-Test", "GeoIP-Anonymous-Plus-Test"]


def _ipv4_if_embedded(cidr: str) -> IPNetwork:
    """MaxMind's sources write IPv4 networks of IPv6 databases as ``::a.b.c.d/n`` (n >= 96)."""
    network = IPNetwork(cidr)
    if network.version == 6 and network.prefixlen >= 96 and network.value >> 32 == 0:
        return IPNetwork((network.value, network.prefixlen - 96), version=4)
    return network


@cache
def _cases(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(cidr, probe address, record) for every network whose probe is not shadowed by a more specific one."""
    entries = [
        (cidr, record)
        for item in json.loads((MAXMIND_TESTDATA / f"{name}.json").read_text())
        for cidr, record in item.items()
    ]
    networks = [_ipv4_if_embedded(cidr) for cidr, _ in entries]
    cases = []
    for (cidr, record), network in zip(entries, networks, strict=True):
        free = IPSet([network]) - IPSet(
            [n for n in networks if n.version == network.version and n != network and n in network]
        )
        probe = next(iter(free.iter_cidrs()), None)
        if probe is not None:
            cases.append((cidr, str(probe.ip), record))
    return cases


def _expected_geo(record: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    country = record.get("country", {}).get("iso_code")
    subdivisions = tuple(f"{country}-{s['iso_code']}" for s in record.get("subdivisions", []) if country)
    return country, subdivisions


def _expected_anonymizer(record: dict[str, Any]) -> Anonymizer:
    return Anonymizer(
        vpn=record.get("is_anonymous_vpn", False),
        tor=record.get("is_tor_exit_node", False),
        hosting=record.get("is_hosting_provider", False),
        public_proxy=record.get("is_public_proxy", False),
        residential_proxy=record.get("is_residential_proxy", False),
    )


def _special_reason(ip: str) -> str | None:
    found = special_range(address_key(ip))[0]
    return None if found is None else found.reason


def _params(names: list[str]) -> Iterator[Any]:
    for name in names:
        if (MAXMIND_TESTDATA / f"{name}.json").is_file():
            yield pytest.param(name, id=name)


@pytest.mark.parametrize("name", list(_params(GEO)))
def test_every_network_of_location_databases(name: str) -> None:
    cases = _cases(name)
    assert len(cases) > 20
    special = 0
    with (
        Locator([MAXMIND_TESTDATA / f"{name}.mmdb"]) as locator,
        geoip2.database.Reader(str(MAXMIND_TESTDATA / f"{name}.mmdb")) as reference,
    ):
        method = {"GeoIP2-City": reference.city, "GeoIP2-Enterprise": reference.enterprise}.get(
            reference.metadata().database_type, reference.country
        )
        for cidr, ip, record in cases:
            location = locator.lookup(ip)
            reason = _special_reason(ip)
            if reason is not None:
                # MaxMind's fixtures put data on some non-global ranges: geofence must still refuse them.
                assert (location.country, location.reason) == (None, reason), cidr
                special += 1
                continue
            country, subdivisions = _expected_geo(record)
            assert location.country == country, (cidr, ip)
            assert location.subdivisions == subdivisions, (cidr, ip)
            assert location.anonymizer is None, (cidr, ip)
            assert location.reason == (None if country else "not_found"), (cidr, ip)
            represented = record.get("represented_country", {})
            assert location.represented_country == represented.get("iso_code"), (cidr, ip)
            assert location.represented_country_type == represented.get("type"), (cidr, ip)
            assert location.registered_country == record.get("registered_country", {}).get("iso_code"), cidr
            # MaxMind's own reader, on the same file, agrees.
            model = method(ip)
            assert location.country == model.country.iso_code, (cidr, ip)
            model_subdivisions = getattr(model, "subdivisions", ())
            assert location.subdivisions == tuple(f"{model.country.iso_code}-{s.iso_code}" for s in model_subdivisions)
    assert special < len(cases) / 2


@pytest.mark.parametrize("name", list(_params(ANONYMOUS)))
def test_every_network_of_anonymizer_databases(name: str) -> None:
    cases = _cases(name)
    assert len(cases) > 10
    with (
        Locator([MAXMIND_TESTDATA / f"{name}.mmdb"]) as locator,
        geoip2.database.Reader(str(MAXMIND_TESTDATA / f"{name}.mmdb")) as reference,
    ):
        method = reference.anonymous_plus if "Plus" in name else reference.anonymous_ip
        for cidr, ip, record in cases:
            location = locator.lookup(ip)
            if (reason := _special_reason(ip)) is not None:
                assert (location.anonymizer, location.reason) == (None, reason), cidr
                continue
            assert location.country is None
            assert location.anonymizer == _expected_anonymizer(record), (cidr, ip)
            model = method(ip)
            assert location.anonymizer == Anonymizer(
                vpn=model.is_anonymous_vpn,
                tor=model.is_tor_exit_node,
                hosting=model.is_hosting_provider,
                public_proxy=model.is_public_proxy,
                residential_proxy=model.is_residential_proxy,
            ), (cidr, ip)


def test_addresses_outside_the_anonymous_database_are_not_anonymizers() -> None:
    with Locator([MAXMIND_TESTDATA / "GeoIP2-Anonymous-IP-Test.mmdb"]) as locator:
        assert locator.lookup("8.8.8.8").anonymizer == Anonymizer()


def test_city_and_anonymous_databases_together() -> None:
    """A realistic production pair: the location database and the anonymizer database, merged."""
    with Locator(
        [MAXMIND_TESTDATA / "GeoIP2-City-Test.mmdb", MAXMIND_TESTDATA / "GeoIP2-Anonymous-IP-Test.mmdb"]
    ) as locator:
        location = locator.lookup("81.2.69.160")
    assert location.country == "GB"
    assert location.subdivisions == ("GB-ENG",)
    assert location.registered_country == "US"
    assert location.anonymizer == Anonymizer(True, True, True, True, True)
    assert [db.type for db in location.databases] == ["GeoIP2-City", "GeoIP2-Anonymous-IP"]
    assert location.network == "81.2.69.160/27"


def test_represented_country_military() -> None:
    with Locator([MAXMIND_TESTDATA / "GeoIP2-Country-Test.mmdb"]) as locator:
        location = locator.lookup("202.196.224.1")
    assert (location.represented_country, location.represented_country_type) == ("US", "military")


@pytest.mark.parametrize("name", ["GeoLite2-City-Test", "GeoLite2-Country-Test", "GeoIP2-Enterprise-Test"])
def test_types_are_detected(name: str) -> None:
    db = open_database(MAXMIND_TESTDATA / f"{name}.mmdb")
    assert db.info.schema == "geoip2"
    db.close()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("MaxMind-DB-test-broken-search-tree-24", "search tree is corrupt"),
        ("GeoIP2-City-Test-Invalid-Node-Count", "not a readable MaxMind DB"),
        ("GeoLite2-ASN-Test", "unsupported database type 'GeoLite2-ASN'"),
        ("MaxMind-DB-test-broken-pointers-24", "unsupported database type 'Test'"),
    ],
)
def test_broken_and_unusable_databases_give_a_clear_error(name: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message) as info:
        Locator([MAXMIND_TESTDATA / f"{name}.mmdb"])
    assert "\n" not in str(info.value)


def test_corrupt_data_section_is_a_clear_error_at_lookup() -> None:
    """The double-format file opens (its first record is sound); the bad record fails when reached."""
    with Locator([MAXMIND_TESTDATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"]) as locator:
        with pytest.raises(DatabaseError, match=r"corrupt data at 81\.2\.69\.160"):
            locator.lookup("81.2.69.160")
        with pytest.raises(DatabaseError):  # not cached as anything
            locator.lookup("81.2.69.160")
