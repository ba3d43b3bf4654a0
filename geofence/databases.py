"""Opening MaxMind-format databases and reading their records in whichever schema they use.

Records are read with the ``maxminddb`` C extension and adapted here with plain dict access: ``geoip2`` model
objects cost 15-25 µs each, which is most of a request's budget.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from .errors import DatabaseError
from .location import Anonymizer, DatabaseInfo
from .resources import data_path

__all__ = ["Facts", "GeoDatabase", "default_database_path", "open_database"]

log = logging.getLogger("geofence")

_DATA_FILE: Final = "dbip-country-lite.mmdb"

_GEOIP2_TYPES: Final = re.compile(
    r"(GeoIP2|GeoLite2)-(Country|City|Enterprise|Precision-(City|Country|Enterprise))([-_].*)?"
    r"|DBIP-(Country|City|Location)\b.*"
)
_ANONYMOUS_TYPES: Final = re.compile(r"GeoIP2?-Anonymous-(IP|Plus)([-_].*)?")
_UNUSABLE_TYPES: Final = re.compile(r".*(ASN|ISP|Connection-Type|Domain|User-Count|IP-Risk).*")

# Record keys that say an address is an anonymizer, in MaxMind's naming (Anonymous IP, Anonymous Plus,
# Enterprise/Insights ``traits``). ``is_anonymous_proxy`` is the legacy City/Country flag for public proxies.
_ANONYMIZER_KEYS: Final = (
    "is_anonymous_vpn",
    "is_tor_exit_node",
    "is_hosting_provider",
    "is_public_proxy",
    "is_residential_proxy",
    "is_anonymous_proxy",
)
_UNKNOWN_COUNTRIES: Final = frozenset({"ZZ", "XX", "--"})


class Facts(NamedTuple):
    """What one database record says, already normalised (ISO codes upper case, subdivisions prefixed)."""

    country: str | None = None
    registered_country: str | None = None
    represented_country: str | None = None
    represented_country_type: str | None = None
    subdivisions: tuple[str, ...] = ()
    anonymizer: Anonymizer | None = None


_NO_FACTS: Final = Facts()


def _country_code(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        code = value.upper()
        return None if code in _UNKNOWN_COUNTRIES else code
    if value in _UNKNOWN_COUNTRIES:
        return None
    raise DatabaseError(f"{where}: {value!r} is not an ISO 3166-1 alpha-2 country code")


_ANONYMIZERS: Final[dict[tuple[bool, ...], Anonymizer]] = {}


def _anonymizer(flags: Mapping[str, Any]) -> Anonymizer:
    key = (
        flags.get("is_anonymous_vpn") is True,
        flags.get("is_tor_exit_node") is True,
        flags.get("is_hosting_provider") is True,
        flags.get("is_public_proxy") is True or flags.get("is_anonymous_proxy") is True,
        flags.get("is_residential_proxy") is True,
    )
    found = _ANONYMIZERS.get(key)
    if found is None:  # at most 32 combinations, so shared
        found = _ANONYMIZERS[key] = Anonymizer(*key)
    return found


def _iso_of(record: Mapping[str, Any], key: str, where: str) -> str | None:
    part = record.get(key)
    return _country_code(part.get("iso_code"), where) if isinstance(part, Mapping) else None


def _geoip2_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 / GeoLite2 Country, City, Enterprise and DB-IP records."""
    country = _iso_of(record, "country", where)
    represented = record.get("represented_country")
    subdivisions: tuple[str, ...] = ()
    raw = record.get("subdivisions")
    if raw and country:
        # MaxMind stores only the part after the hyphen ("43" under UA): ISO 3166-2 needs the country prefix.
        codes = []
        for sub in raw:
            code = sub.get("iso_code") if isinstance(sub, Mapping) else None
            if isinstance(code, str) and code:
                code = code.upper()
                codes.append(code if code.startswith(country + "-") else f"{country}-{code}")
        subdivisions = tuple(codes)
    traits = record.get("traits")
    anonymizer = None
    if isinstance(traits, Mapping) and any(key in traits for key in _ANONYMIZER_KEYS):
        anonymizer = _anonymizer(traits)
    return Facts(
        country=country,
        registered_country=_iso_of(record, "registered_country", where),
        represented_country=_iso_of(record, "represented_country", where),
        represented_country_type=represented.get("type") if isinstance(represented, Mapping) else None,
        subdivisions=subdivisions,
        anonymizer=anonymizer,
    )


def _anonymous_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 Anonymous IP and GeoIP Anonymous Plus records (flags at the top level)."""
    return Facts(anonymizer=_anonymizer(record))


_FLAT_FACTS: Final[dict[Any, Facts]] = {}


def _flat_facts(record: Mapping[str, Any], where: str) -> Facts:
    """The ``{"country_code": "XX"}`` records of the ip-location-db packages (one shared value per code)."""
    code = record.get("country_code")
    found = _FLAT_FACTS.get(code) if type(code) is str else None
    if found is None:
        found = Facts(country=_country_code(code, where))
        if type(code) is str and len(_FLAT_FACTS) < 1024:
            _FLAT_FACTS[code] = found
    return found


_SCHEMAS: Final[dict[str, Callable[[Mapping[str, Any], str], Facts]]] = {
    "geoip2": _geoip2_facts,
    "anonymous": _anonymous_facts,
    "flat": _flat_facts,
}


def _schema_of_record(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return None
    if isinstance(record.get("country_code"), str):
        return "flat"
    if any(isinstance(record.get(k), Mapping) for k in ("country", "registered_country", "represented_country")):
        return "geoip2"
    if "is_anonymous" in record or any(k in record for k in _ANONYMIZER_KEYS):
        return "anonymous"
    return None


class GeoDatabase:
    """One open database: its reader, its identity and the adapter for its schema.

    ``anonymizer_capable`` databases answer by silence too: an address missing from an Anonymous IP
    database is known not to be an anonymizer.
    """

    __slots__ = ("_extract", "anonymizer_capable", "info", "ip_version", "metadata", "reader")

    def __init__(self, reader: Any, info: DatabaseInfo, metadata: Any) -> None:
        self.reader = reader
        self.info = info
        self.metadata = metadata
        self.ip_version: int = metadata.ip_version
        self.anonymizer_capable = info.schema == "anonymous"
        self._extract = _SCHEMAS[info.schema]

    def facts(self, record: Any) -> Facts:
        """Adapt one raw record; an empty record means the database has nothing for that network."""
        if not record:
            return _NO_FACTS
        if not isinstance(record, Mapping):
            raise DatabaseError(f"{self.info.path}: unexpected record {type(record).__name__} (corrupt database?)")
        return self._extract(record, self.info.path)

    def close(self) -> None:
        self.reader.close()


_missing_extension_warned = False


def _open_reader(path: str) -> Any:
    global _missing_extension_warned
    try:
        return maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
    except ValueError as exc:
        if "extension" not in str(exc):
            raise
    if not _missing_extension_warned:
        _missing_extension_warned = True
        message = (
            "the maxminddb C extension is not available; using the pure-Python reader, "
            "which is 20-50x slower per lookup (reinstall maxminddb with a compiler or a binary wheel)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
    return maxminddb.open_database(path, maxminddb.MODE_AUTO)


def open_database(path: str | os.PathLike[str]) -> GeoDatabase:
    """Open *path*, check it is a sound MaxMind DB and detect its schema.

    Raises :class:`DatabaseError` with a one-line message when the file is missing, is not a MaxMind DB, is
    corrupt at the first record, or holds a schema geofence cannot use (e.g. an ASN database).
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise DatabaseError(f"{name}: no such database file")
    try:
        reader = _open_reader(name)
        metadata = reader.metadata()
        first = next(iter(reader), None)
    except (InvalidDatabaseError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{name}: not a readable MaxMind DB ({_one_line(exc)})") from None
    try:
        kind = str(metadata.database_type)
        if metadata.ip_version not in (4, 6) or metadata.record_size not in (24, 28, 32) or metadata.node_count < 1:
            raise DatabaseError(f"{name}: corrupt metadata (ip_version, record_size or node_count out of range)")
        schema = _schema_of_type(kind)
        if schema is None:
            schema = _schema_of_record(first[1] if first else None)
        if not schema:
            raise DatabaseError(
                f"{name}: unsupported database type {kind!r}: geofence reads location databases "
                "(GeoIP2/GeoLite2 Country, City, Enterprise; DB-IP; ip-location-db country) and "
                "anonymizer databases (GeoIP2 Anonymous IP, GeoIP Anonymous Plus)"
            )
    except BaseException:
        reader.close()
        raise
    info = DatabaseInfo(path=name, type=kind, build_epoch=int(metadata.build_epoch), schema=schema)
    return GeoDatabase(reader, info, metadata)


def _schema_of_type(kind: str) -> str | None:
    if _ANONYMOUS_TYPES.fullmatch(kind):
        return "anonymous"
    if _GEOIP2_TYPES.fullmatch(kind):
        return "geoip2"
    if _UNUSABLE_TYPES.fullmatch(kind):
        return ""  # known, and known to hold no location: not worth sniffing
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def default_database_path() -> Path:
    """The bundled DB-IP Lite country database (see ``data/README.md``)."""
    return data_path(_DATA_FILE)
