"""Locator on real .mmdb files written by mmdb-writer and read by the maxminddb C extension."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from geofence import Anonymizer, DatabaseError, InvalidAddressError, Location, Locator
from geofence.geoip.databases import default_database_path, open_database

from .conftest import LOCATION_KEYS, WriteDb, country


def test_country_database(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        location = locator.lookup("8.8.8.8")
    assert location.country == "US"
    assert location.registered_country == "US"
    assert location.network == "8.8.8.0/24"
    assert location.anonymizer is None  # no anonymizer-capable database configured
    assert location.geolocatable and location.reason is None
    assert [db.type for db in location.databases] == ["GeoIP2-Country"]
    assert location.databases[0].schema == "geoip2"


def test_registered_and_represented_country(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        gb = locator.lookup("81.2.69.142")
        base = locator.lookup("214.3.4.5")
    assert (gb.country, gb.registered_country) == ("GB", "FR")
    assert (base.country, base.registered_country) == ("DE", "US")
    assert (base.represented_country, base.represented_country_type) == ("US", "military")


def test_subdivisions_are_full_iso_3166_2_codes(city_db: Path) -> None:
    with Locator([city_db]) as locator:
        assert locator.lookup("91.207.57.1").subdivisions == ("UA-43",)
        assert locator.lookup("81.2.69.142").subdivisions == ("GB-ENG", "GB-WBK")
        assert locator.lookup("8.8.8.8").subdivisions == ("US-CA",)


def test_ipv4_mapped_ipv6_resolves_as_ipv4(country_db: Path) -> None:
    # mmdb-writer stores IPv4 only under ::/96, so without normalisation ::ffff:8.8.8.8 would be "not found".
    with Locator([country_db]) as locator:
        assert locator.lookup("::ffff:8.8.8.8").country == "US"
        assert locator.lookup("::ffff:8.8.8.8") == locator.lookup("8.8.8.8")


def test_zone_id_is_stripped(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        assert locator.lookup("2a02:ff0::1%eth0").country == "DE"


def test_ipv6(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        location = locator.lookup("2a02:ff0:1234::1")
    assert location.country == "DE"
    assert location.network == "2a02:ff0::/32"


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.1.2.3", "private"),  # the database has a record for 10.0.0.0/8: it must not be used
        ("100.64.0.1", "cgnat"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.0.1", "link_local"),
        ("fe80::1%eth0", "link_local"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("fd00::1", "private"),
    ],
)
def test_non_global_addresses_are_never_geolocated(country_db: Path, ip: str, reason: str) -> None:
    with Locator([country_db]) as locator:
        location = locator.lookup(ip)
    assert location.country is None
    assert not location.geolocatable
    assert location.reason == reason
    assert location.databases == ()


def test_cache_never_spreads_a_network_over_a_special_range(country_db: Path) -> None:
    # 100.0.0.0/8 is US in the database and straddles CGNAT 100.64.0.0/10: caching the /8 as one range would
    # turn a CGNAT address looked up later into "US".
    with Locator([country_db]) as locator:
        assert locator.lookup("100.1.1.1").country == "US"
        assert locator.lookup("100.64.0.1").reason == "cgnat"
        assert locator.lookup("100.128.0.1").country == "US"
        assert locator.lookup("100.64.0.1").reason == "cgnat"


def test_not_found(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        location = locator.lookup("1.1.1.1")
        # The database's empty network is 0.0.0.0/6; it holds 0.0.0.0/8 (special), so the cache keeps the
        # largest block around the address that avoids it: 1.0.0.0/8.
        assert locator.lookup("1.200.0.0") == location
        assert locator.lookup("0.1.1.1").reason == "unspecified"
        assert locator.lookup("3.255.255.255") == location
    assert location.country is None
    assert location.reason == "not_found"
    assert location.databases == ()
    assert location.network == "0.0.0.0/6"


def test_one_cache_entry_covers_the_whole_network(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        first = locator.lookup("8.8.8.1")
        assert locator.cached_networks == 1
        for last_octet in (0, 2, 77, 200, 255):
            assert locator.lookup(f"8.8.8.{last_octet}") == first
        assert locator.lookup("::ffff:8.8.8.9") == first
        assert locator.cached_networks == 1
        assert locator.lookup("8.8.9.1") != first  # the next network is a new entry
        assert locator.cached_networks == 2


def test_cache_is_bounded_and_stays_correct(country_db: Path) -> None:
    with Locator([country_db], cache_size=2) as locator:
        for _ in range(3):
            assert locator.lookup("8.8.8.8").country == "US"
            assert locator.lookup("81.2.69.1").country == "GB"
            assert locator.lookup("5.8.1.1").country == "RU"
            assert locator.lookup("2a02:ff0::1").country == "DE"
            assert locator.cached_networks <= 2


def test_multiple_databases_are_merged(country_db: Path, city_db: Path, anonymous_db: Path) -> None:
    with Locator([country_db, city_db, anonymous_db]) as locator:
        clean = locator.lookup("8.8.8.8")
        vpn = locator.lookup("8.8.8.200")
        proxy = locator.lookup("81.2.69.1")
        crimea = locator.lookup("5.8.1.1")
        residential = locator.lookup("2a02:ff0:1::5")
        unlisted_v6 = locator.lookup("2a02:ff0:2::5")
    # Country from the first database, subdivisions from the second, anonymizer from the third.
    assert (clean.country, clean.subdivisions) == ("US", ("US-CA",))
    # The anonymous database answers by silence: known not to be an anonymizer (not None).
    assert clean.anonymizer == Anonymizer()
    # The merged network is the intersection: the anonymous database splits 8.8.8.0/24 into two /25s.
    assert clean.network == "8.8.8.0/25"
    assert vpn.network == "8.8.8.128/25"
    assert vpn.anonymizer == Anonymizer(vpn=True)
    assert vpn.anonymizer is not None and vpn.anonymizer.any
    # City's legacy is_anonymous_proxy and the Anonymous IP database agree: public proxy.
    assert proxy.anonymizer == Anonymizer(public_proxy=True)
    assert [db.type for db in proxy.databases] == ["GeoIP2-Country", "GeoIP2-City", "GeoIP2-Anonymous-IP"]
    # Databases disagree: the first wins, the other is reported, and its subdivision is kept for deny rules.
    assert crimea.country == "RU"
    assert crimea.other_countries == ("UA",)
    assert crimea.subdivisions == ("UA-43",)
    assert residential.anonymizer == Anonymizer(residential_proxy=True)
    assert unlisted_v6.anonymizer == Anonymizer()


def test_anonymous_database_alone(anonymous_db: Path) -> None:
    with Locator([anonymous_db]) as locator:
        tor = locator.lookup("185.220.101.7")
    assert tor.country is None and tor.reason == "not_found"
    assert tor.anonymizer == Anonymizer(tor=True, hosting=True)


def test_city_traits_give_anonymizer_only_when_present(city_db: Path) -> None:
    with Locator([city_db]) as locator:
        assert locator.lookup("81.2.69.1").anonymizer == Anonymizer(public_proxy=True)
        assert locator.lookup("8.8.8.8").anonymizer is None


def test_flat_ipv4_only_database(flat_db: Path) -> None:
    with Locator([flat_db]) as locator:
        assert locator.lookup("8.8.8.8").country == "US"
        assert locator.lookup("185.220.101.1").country == "DE"  # lower case in the file
        v6 = locator.lookup("2a02:ff0::1")
    assert open_database(flat_db).info.schema == "flat"
    assert v6.reason == "not_found" and v6.network == "::/0"


def test_location_as_dict_contract(city_db: Path, anonymous_db: Path) -> None:
    with Locator([city_db, anonymous_db]) as locator:
        data = locator.lookup("91.207.57.1").as_dict()
    assert set(data) >= LOCATION_KEYS
    assert data["subdivisions"] == ["UA-43"]
    assert data["anonymizer"] == {
        "vpn": False,
        "tor": False,
        "hosting": False,
        "public_proxy": False,
        "residential_proxy": False,
    }
    assert data["databases"][0]["type"] == "GeoIP2-City"
    assert len(data["databases"][0]["build_date"]) == 10


def test_values_are_immutable(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        location = locator.lookup("8.8.8.8")
    with pytest.raises(AttributeError):
        location.country = "CU"  # type: ignore[misc]
    assert isinstance(location, Location)


def test_swapped_database_never_serves_stale_entries(write_db: WriteDb, tmp_path: Path) -> None:
    path = write_db("live.mmdb", "GeoIP2-Country", {"8.8.8.0/24": {"country": country("US")}})
    old = Locator([path])
    assert old.lookup("8.8.8.8").country == "US"
    new_file = write_db("next.mmdb", "GeoIP2-Country", {"8.8.8.0/24": {"country": country("CA")}})
    os.replace(new_file, path)  # atomic replacement, as geoipupdate does
    with Locator([path]) as new:
        assert new.lookup("8.8.8.8").country == "CA"
    # The old locator keeps answering from the file it opened, never a mix of both.
    assert old.lookup("8.8.8.8").country == "US"
    assert old.lookup("8.8.8.77").country == "US"
    old.close()


def test_lookup_after_close_is_a_clear_error(country_db: Path) -> None:
    locator = Locator([country_db])
    locator.close()
    with pytest.raises(DatabaseError, match="closed"):
        locator.lookup("8.8.8.8")


@pytest.mark.parametrize("ip", ["8.8.8", "not an ip", "8.8.8.8/24", ""])
def test_bad_addresses(country_db: Path, ip: str) -> None:
    with Locator([country_db]) as locator, pytest.raises(InvalidAddressError):
        locator.lookup(ip)


def test_invalid_country_code_in_database_is_an_error(write_db: WriteDb) -> None:
    path = write_db("bad.mmdb", "country ipv4", {"8.8.8.0/24": {"country_code": "Germany"}}, ip_version=4)
    with Locator([path]) as locator, pytest.raises(DatabaseError, match="not an ISO 3166-1 alpha-2"):
        locator.lookup("8.8.8.8")


def test_unknown_country_placeholders_mean_not_found(write_db: WriteDb) -> None:
    path = write_db("zz.mmdb", "country ipv4", {"8.8.8.0/24": {"country_code": "ZZ"}}, ip_version=4)
    with Locator([path]) as locator:
        assert locator.lookup("8.8.8.8").reason == "not_found"


# --- opening databases ------------------------------------------------------------------------------------


def test_missing_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no such database file"):
        Locator([tmp_path / "nope.mmdb"])
    with pytest.raises(DatabaseError, match="no such database file"):
        Locator([tmp_path])  # a directory


def test_no_databases() -> None:
    with pytest.raises(DatabaseError, match="no GeoIP database configured"):
        Locator([])


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100, os.urandom(4096)])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(content)
    with pytest.raises(DatabaseError, match="not a readable MaxMind DB"):
        Locator([path])


def test_truncated_database(country_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.mmdb"
    path.write_bytes(country_db.read_bytes()[:200])
    with pytest.raises(DatabaseError):
        Locator([path])


def test_unknown_schema(write_db: WriteDb) -> None:
    path = write_db("custom.mmdb", "Acme-Custom", {"8.8.8.0/24": {"colour": "blue"}})
    with pytest.raises(DatabaseError, match="unsupported database type 'Acme-Custom'"):
        Locator([path])


def test_asn_database_is_refused(write_db: WriteDb) -> None:
    path = write_db("asn.mmdb", "GeoLite2-ASN", {"8.8.8.0/24": {"autonomous_system_number": 15169}})
    with pytest.raises(DatabaseError, match="unsupported database type 'GeoLite2-ASN'"):
        Locator([path])


@pytest.mark.parametrize(
    ("database_type", "schema"),
    [
        ("GeoIP2-Country", "geoip2"),
        ("GeoLite2-City", "geoip2"),
        ("GeoIP2-Enterprise", "geoip2"),
        ("GeoIP2-Precision-Enterprise", "geoip2"),
        ("DBIP-Country-Lite", "geoip2"),
        ("DBIP-City-Lite", "geoip2"),
        ("DBIP-Location (compat=City)", "geoip2"),
        ("GeoIP2-Anonymous-IP", "anonymous"),
        ("GeoIP-Anonymous-Plus", "anonymous"),
    ],
)
def test_schema_detected_from_database_type(write_db: WriteDb, database_type: str, schema: str) -> None:
    # The record is deliberately of no schema: the type name alone must decide.
    path = write_db("typed.mmdb", database_type, {"8.8.8.0/24": {"x": 1}})
    assert open_database(path).info.schema == schema


def test_dbip_native_country_lite(write_db: WriteDb) -> None:
    path = write_db(
        "dbip.mmdb",
        "DBIP-Country-Lite",
        {"8.8.8.0/24": {"continent": {"code": "NA"}, "country": {"iso_code": "US", "is_in_european_union": False}}},
    )
    with Locator([path]) as locator:
        assert locator.lookup("8.8.8.8").country == "US"


def test_schema_sniffed_for_unknown_type_names(write_db: WriteDb) -> None:
    geo = write_db("vendor.mmdb", "Vendor-Geo", {"8.8.8.0/24": {"country": country("US")}})
    anon = write_db("vendor-anon.mmdb", "Vendor-Anon", {"8.8.8.0/24": {"is_anonymous": True, "is_tor_exit_node": True}})
    assert open_database(geo).info.schema == "geoip2"
    assert open_database(anon).info.schema == "anonymous"


def test_bundled_database() -> None:
    path = default_database_path()
    assert path.name == "dbip-country-lite.mmdb"
    with Locator() as locator:
        assert locator.lookup("8.8.8.8").country == "US"
        assert locator.lookup("2a00:1450:4001:81b::200e").geolocatable
        info = locator.databases[0].info
    assert info.schema == "flat"
    assert info.build_date.year >= 2026


def test_missing_c_extension_warns_once(country_db: Path) -> None:
    """Without the C extension the pure-Python reader still works, and says once that it is slow."""
    code = f"""
import sys, warnings
sys.modules["maxminddb.extension"] = None  # as if the extension failed to build
from geofence import Locator
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = Locator([{str(country_db)!r}])
    b = Locator([{str(country_db)!r}])
    assert a.lookup("8.8.8.8").country == "US"
assert type(a.databases[0].reader).__module__ == "maxminddb.reader", type(a.databases[0].reader)
messages = [str(w.message) for w in caught if "C extension" in str(w.message)]
assert len(messages) == 1, messages
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_ipv6_answer_never_covers_ipv4(flat_db: Path) -> None:
    """An IPv4-only database says nothing for IPv6 (network ::/0), which must not shadow IPv4 lookups."""
    with Locator([flat_db]) as locator:
        assert locator.lookup("2a02:ff0::1").network == "::/0"
        assert locator.lookup("8.8.8.8").country == "US"
        assert locator.lookup("::ffff:8.8.8.8").country == "US"


def test_6to4_is_geolocated_by_its_embedded_ipv4(country_db: Path) -> None:
    with Locator([country_db]) as locator:
        assert locator.lookup("2002:808:808::1").country == "US"  # 8.8.8.8
        assert locator.lookup("2002:a00:1::1").reason == "private"  # 10.0.0.1


def test_6to4_on_the_bundled_database() -> None:
    # DB-IP maps all of 2002::/16 to one country; the embedded address is what identifies the client.
    with Locator() as locator:
        assert locator.lookup("2002:af2d:b001::1").country == locator.lookup("175.45.176.1").country == "KP"


def test_ipv6_database_without_ipv4_data_says_nothing_about_ipv4(write_db: WriteDb) -> None:
    v6 = write_db(
        "v6.mmdb", "GeoIP2-Country", {"::/16": {"country": country("KP")}, "2a02::/16": {"country": country("DE")}}
    )
    anon = write_db(
        "v6anon.mmdb", "GeoIP2-Anonymous-IP", {"2a02:ff0::/32": {"is_anonymous": True, "is_anonymous_vpn": True}}
    )
    with Locator([v6, anon]) as locator:
        v4 = locator.lookup("1.2.3.4")
        assert (v4.country, v4.reason, v4.anonymizer) == (None, "not_found", None)
        assert locator.lookup("2a02::1").country == "DE"
        assert locator.lookup("2a02:ff0::1").anonymizer == Anonymizer(vpn=True)


@pytest.mark.parametrize(
    "record",
    [
        {"country": "US"},
        {"country": {"iso_code": ["US"]}},
        {"country": {"iso_code": {"x": 1}}},
        {"country": {"iso_code": "US"}, "subdivisions": 5},
        {"country": {"iso_code": "US"}, "subdivisions": "CA"},
        {"country": {"iso_code": "US"}, "subdivisions": [{"iso_code": 6}]},
        {"country": {"iso_code": "US"}, "subdivisions": [{"iso_code": "X" * 100}]},
        {"country": {"iso_code": "US"}, "registered_country": "US"},
        {"country": {"iso_code": "US"}, "represented_country": {"iso_code": "US", "type": 7}},
        {"country": {"iso_code": "US"}, "traits": {"is_anonymous_vpn": "true"}},
        {"country": {"iso_code": "US"}, "traits": "vpn"},
    ],
)
def test_malformed_records_are_database_errors(write_db: WriteDb, record: dict[str, object]) -> None:
    path = write_db("malformed.mmdb", "GeoIP2-City", {"8.8.8.0/24": record})
    with Locator([path]) as locator, pytest.raises(DatabaseError):
        locator.lookup("8.8.8.8")


@pytest.mark.parametrize(
    "record", [{"is_anonymous": True, "is_tor_exit_node": "yes"}, {"is_anonymous": True, "is_anonymous_vpn": 2}]
)
def test_malformed_anonymizer_flags_are_database_errors(write_db: WriteDb, record: dict[str, object]) -> None:
    path = write_db("anon.mmdb", "GeoIP2-Anonymous-IP", {"8.8.8.0/24": record})
    with Locator([path]) as locator, pytest.raises(DatabaseError, match="not true or false"):
        locator.lookup("8.8.8.8")


def test_legacy_anonymous_proxy_false_says_nothing(write_db: WriteDb) -> None:
    path = write_db(
        "city.mmdb", "GeoIP2-City", {"8.8.8.0/24": {"country": country("US"), "traits": {"is_anonymous_proxy": False}}}
    )
    with Locator([path]) as locator:
        assert locator.lookup("8.8.8.8").anonymizer is None


def test_absurd_build_epoch_is_a_database_error(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    class FutureWriter(MMDBWriter):
        def _build_meta(self) -> dict[str, object]:
            return {**super()._build_meta(), "build_epoch": 2**62}

    writer = FutureWriter(ip_version=6, database_type="GeoIP2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": country("US")})
    writer.to_db_file(str(tmp_path / "future.mmdb"))
    with pytest.raises(DatabaseError, match="build_epoch"):
        Locator([tmp_path / "future.mmdb"])


def test_copy_mode_survives_the_file_being_overwritten_in_place(country_db: Path) -> None:
    with Locator([country_db]) as locator:  # load="copy" is the default
        assert locator.lookup("8.8.8.8").country == "US"
        with open(country_db, "r+b") as f:  # what `cp new.mmdb live.mmdb` does to a running reader
            f.truncate(0)
            f.write(b"\0" * 100)
        assert locator.lookup("8.8.8.9").country == "US"
        assert locator.lookup("81.2.69.1").country == "GB"


def test_mmap_mode_reads_the_file_itself(country_db: Path) -> None:
    with Locator([country_db], load="mmap") as locator:
        assert locator.lookup("8.8.8.8").country == "US"
    with pytest.raises(DatabaseError, match="load mode"):
        Locator([country_db], load="memory")


def test_a_single_path_is_accepted(country_db: Path) -> None:
    with Locator(country_db) as locator, Locator(str(country_db)) as again:
        assert locator.lookup("8.8.8.8").country == again.lookup("8.8.8.8").country == "US"


@pytest.mark.parametrize("key", [-1, 1 << 128])
def test_lookup_key_rejects_what_is_not_a_key(country_db: Path, key: object) -> None:
    with Locator([country_db]) as locator, pytest.raises(InvalidAddressError):
        locator.lookup_key(key)  # type: ignore[arg-type]


def test_geoip2_records_are_adapted_once_per_answer_and_bad_ones_still_refused(city_db: Path) -> None:
    """City records carry dozens of values a decision never reads: the adapted facts are remembered by the few
    it does read, and a record that only looks like a remembered one is still validated (and refused)."""
    with Locator([city_db]) as locator:
        db = locator.databases[0]
        plain = {"country": {"iso_code": "UA", "names": {"en": "Ukraine"}}, "subdivisions": [{"iso_code": "43"}]}
        renamed = {"country": {"iso_code": "UA", "names": {"en": "Україна"}}, "subdivisions": [{"iso_code": "43"}],
                   "city": {"names": {"en": "Kyiv"}}, "location": {"latitude": 50.45}}  # fmt: skip
        first = db.facts(plain)
        assert db.facts(renamed) is first and first.subdivisions == ("UA-43",)
        for bad in (
            {"country": {"iso_code": "UA"}, "subdivisions": [{"iso_code": ["43"]}]},  # unhashable code
            {"country": {"iso_code": "UA"}, "subdivisions": ["43"]},  # not a map
            {"country": {"iso_code": "UA"}, "subdivisions": [{"iso_code": "4-3"}]},
            {"country": "UA"},
            {"country": {"iso_code": "UA"}, "traits": {"is_anonymous_vpn": "yes"}},
        ):
            with pytest.raises(DatabaseError):
                db.facts(bad)
        flagged = db.facts({"country": {"iso_code": "UA"}, "traits": {"is_anonymous_vpn": True}})
        assert flagged.anonymizer is not None and flagged.anonymizer.vpn
        assert (
            db.facts({"country": {"iso_code": "UA"}, "traits": {"is_anonymous_vpn": False}}).anonymizer == Anonymizer()
        )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"is_anonymous_proxy": 1}, {"is_anonymous_proxy": True}),  # 1 == True, and hashes alike
        ({"is_anonymous_vpn": 0}, {"is_anonymous_vpn": False}),
        ({"is_anonymous_vpn": 1.0}, {"is_anonymous_vpn": True}),
    ],
)
def test_the_memo_never_confuses_a_number_with_a_flag(city_db: Path, first: dict, second: dict) -> None:
    """Only a bool is a flag: whichever record comes first, each gets what adapting it afresh gives."""
    from geofence.geoip.records import geoip2_facts

    for order in ((first, second), (second, first)):
        with Locator([city_db]) as locator:
            db = locator.databases[0]
            for traits in order:
                record = {"country": {"iso_code": "GB"}, "traits": traits}
                try:
                    expected: object = geoip2_facts(record, "x")
                except DatabaseError:
                    expected = DatabaseError
                try:
                    got: object = db.facts(record)
                except DatabaseError:
                    got = DatabaseError
                assert got == expected, (order, traits)
