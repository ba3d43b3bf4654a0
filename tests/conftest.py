"""Shared fixtures: real .mmdb files written with mmdb-writer, and the path to MaxMind's test data."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOFENCE_SHARED", ROOT.parent / "shared"))
MAXMIND_TESTDATA = SHARED / "testdata" / "maxmind"

WriteDb = Callable[..., Path]

# The keys of Location.as_dict() that `geofence lookup --json` promises.
LOCATION_KEYS = frozenset(
    {"country", "registered_country", "represented_country", "subdivisions", "network", "anonymizer",
     "geolocatable", "reason", "databases"}
)  # fmt: skip


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll *predicate* until it is true (for background threads: reloads, key refreshes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def write_mmdb(
    path: Path,
    database_type: str,
    networks: Mapping[str, Mapping[str, Any]],
    *,
    ip_version: int = 6,
) -> Path:
    """Write *networks* (CIDR -> record) to a MaxMind DB at *path*; IPv4 goes to ::/96 as MaxMind does."""
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        languages=["en"],
        description="geofence test database",
        ipv4_compatible=ip_version == 6,
    )
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), dict(record))
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def write_db(tmp_path: Path) -> WriteDb:
    """``write_db(name, database_type, networks, ip_version=6)`` -> path of a fresh database."""

    def write(name: str, database_type: str, networks: Mapping[str, Mapping[str, Any]], **kw: Any) -> Path:
        return write_mmdb(tmp_path / name, database_type, networks, **kw)

    return write


def country(code: str) -> dict[str, Any]:
    return {"iso_code": code, "names": {"en": code}}


@pytest.fixture
def country_db(write_db: WriteDb) -> Path:
    """GeoIP2-Country schema."""
    return write_db(
        "country.mmdb",
        "GeoIP2-Country",
        {
            "8.8.8.0/24": {"country": country("US"), "registered_country": country("US")},
            "81.2.69.0/24": {"country": country("GB"), "registered_country": country("FR")},
            "5.8.0.0/16": {"country": country("RU"), "registered_country": country("RU")},
            "2a02:ff0::/32": {"country": country("DE"), "registered_country": country("DE")},
            "214.0.0.0/8": {
                "country": country("DE"),
                "registered_country": country("US"),
                "represented_country": {**country("US"), "type": "military"},
            },
            "100.0.0.0/8": {"country": country("US")},  # straddles CGNAT 100.64.0.0/10
            "10.0.0.0/8": {"country": country("US")},  # a database that wrongly geolocates private space
        },
    )


@pytest.fixture
def city_db(write_db: WriteDb) -> Path:
    """GeoIP2-City schema with MaxMind-style subdivisions (codes without the country prefix)."""
    return write_db(
        "city.mmdb",
        "GeoIP2-City",
        {
            "8.8.8.0/24": {"country": country("US"), "subdivisions": [{"iso_code": "CA"}]},
            "91.207.56.0/22": {"country": country("UA"), "subdivisions": [{"iso_code": "43"}]},
            "81.2.69.0/24": {
                "country": country("GB"),
                "subdivisions": [{"iso_code": "ENG"}, {"iso_code": "WBK"}],
                "traits": {"is_anonymous_proxy": True},
            },
            "5.8.0.0/16": {"country": country("UA"), "subdivisions": [{"iso_code": "43"}]},
        },
    )


@pytest.fixture
def anonymous_db(write_db: WriteDb) -> Path:
    """GeoIP2-Anonymous-IP schema: flags at the top level, networks only for anonymizers."""
    return write_db(
        "anonymous.mmdb",
        "GeoIP2-Anonymous-IP",
        {
            "8.8.8.128/25": {"is_anonymous": True, "is_anonymous_vpn": True},
            "185.220.101.0/24": {"is_anonymous": True, "is_tor_exit_node": True, "is_hosting_provider": True},
            "2a02:ff0:1::/48": {"is_anonymous": True, "is_residential_proxy": True},
            "81.2.69.0/25": {"is_anonymous": True, "is_public_proxy": True},
        },
    )


@pytest.fixture
def flat_db(write_db: WriteDb) -> Path:
    """The ip-location-db schema, IPv4-only like their ``*-ipv4.mmdb`` files."""
    return write_db(
        "flat.mmdb",
        "country ipv4",
        {"8.8.8.0/24": {"country_code": "US"}, "185.220.101.0/24": {"country_code": "de"}},
        ip_version=4,
    )


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    """A JWKS file with the token tests' RSA, EC and Ed25519 keys (kids rsa-1, ec-1, ed-1)."""
    import json

    from .test_tokens import EC_KEY, ED_KEY, RSA_KEY, jwk

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"), jwk(ED_KEY, "ed-1")]}))
    return path


@pytest.fixture
def verifier(jwks_file: Path) -> Any:
    """A TokenVerifier trusting :func:`jwks_file`."""
    from geofence.identity.tokens import TokenConfig, TokenVerifier

    from .test_tokens import AUDIENCE, ISSUER

    return TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=jwks_file))
