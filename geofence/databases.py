"""Opening MaxMind-format databases and reading their records in whichever schema they use.

Records are read with the ``maxminddb`` C extension and adapted here with plain dict access: ``geoip2`` model
objects cost 15-25 µs each, which is most of a request's budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from .errors import DatabaseError
from .location import Anonymizer, DatabaseInfo
from .resources import data_path

__all__ = ["LOAD_MODES", "Facts", "GeoDatabase", "LoadMode", "default_database_path", "open_database"]

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
_FULL_ANONYMIZER_KEYS: Final = _ANONYMIZER_KEYS[:-1]
_UNKNOWN_COUNTRIES: Final = frozenset({"ZZ", "XX", "--"})
_SUBDIVISION_CODE: Final = re.compile(r"([A-Z]{2}-)?[A-Z0-9]{1,3}")


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
    if isinstance(value, str):
        if value in _UNKNOWN_COUNTRIES:
            return None
        if len(value) == 2 and value.isascii() and value.isalpha():
            code = value.upper()
            return None if code in _UNKNOWN_COUNTRIES else code
    raise DatabaseError(f"{where}: {_short(value)} is not an ISO 3166-1 alpha-2 country code")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


_ANONYMIZERS: Final[dict[tuple[bool, ...], Anonymizer]] = {}


def _anonymizer(flags: Mapping[str, Any], where: str) -> Anonymizer:
    for name in _ANONYMIZER_KEYS:
        if name in flags and not isinstance(flags[name], bool):
            raise DatabaseError(f"{where}: anonymizer flag {name} is {_short(flags[name])}, not true or false")
    key = (
        flags.get("is_anonymous_vpn", False),
        flags.get("is_tor_exit_node", False),
        flags.get("is_hosting_provider", False),
        flags.get("is_public_proxy", False) or flags.get("is_anonymous_proxy", False),
        flags.get("is_residential_proxy", False),
    )
    found = _ANONYMIZERS.get(key)
    if found is None:  # at most 32 combinations, so shared
        found = _ANONYMIZERS[key] = Anonymizer(*key)
    return found


def _part(record: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    part = record.get(key)
    if part is None or isinstance(part, Mapping):
        return part
    raise DatabaseError(f"{where}: {key} is {_short(part)}, not a map")


def _geoip2_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 / GeoLite2 Country, City, Enterprise and DB-IP records."""
    country_part = _part(record, "country", where)
    country = _country_code(country_part.get("iso_code"), where) if country_part else None
    registered = _part(record, "registered_country", where)
    represented = _part(record, "represented_country", where)
    represented_type = represented.get("type") if represented else None
    if represented_type is not None and not isinstance(represented_type, str):
        raise DatabaseError(f"{where}: represented_country.type is {_short(represented_type)}")
    subdivisions: tuple[str, ...] = ()
    raw = record.get("subdivisions")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(sub, Mapping) for sub in raw):
            raise DatabaseError(f"{where}: subdivisions is {_short(raw)}, not a list of maps")
        codes = []
        for sub in raw:
            code = sub.get("iso_code")
            if code is None:
                continue  # DB-IP City names subdivisions without ISO codes
            if not isinstance(code, str) or not _SUBDIVISION_CODE.fullmatch(code.upper()) or country is None:
                raise DatabaseError(f"{where}: subdivision code {_short(code)} is not part of an ISO 3166-2 code")
            # MaxMind stores only the part after the hyphen ("43" under UA): ISO 3166-2 needs the country prefix.
            code = code.upper()
            codes.append(code if code.startswith(country + "-") else f"{country}-{code}")
        subdivisions = tuple(codes)
    traits = _part(record, "traits", where)
    anonymizer = None
    if traits and (any(key in traits for key in _FULL_ANONYMIZER_KEYS) or traits.get("is_anonymous_proxy") is True):
        # Enterprise/Insights traits carry the full set; City's legacy is_anonymous_proxy only says "yes".
        anonymizer = _anonymizer(traits, where)
    return Facts(
        country=country,
        registered_country=_country_code(registered.get("iso_code"), where) if registered else None,
        represented_country=_country_code(represented.get("iso_code"), where) if represented else None,
        represented_country_type=represented_type,
        subdivisions=subdivisions,
        anonymizer=anonymizer,
    )


_ABSENT: Final = object()
_MEMO_ENTRIES: Final = 1 << 14  # distinct answers remembered per database (~10 MB; a city database has ~10^4)


def _geoip2_key(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Everything :func:`_geoip2_facts` reads of *record*, as a key, or None when a part is not plain data
    (then the record is adapted, and validated, in full). A city record decodes to ~40 values (names in eight
    languages, coordinates, postal code) of which a decision uses a handful: adapting them costs ~5 µs, more
    than reading the record; looking the answer up by them costs a fraction of that."""
    country, registered, represented = record.get("country"), record.get("registered_country"), None
    if "represented_country" in record:
        represented = record["represented_country"]
    raw, traits = record.get("subdivisions"), record.get("traits")
    for part in (country, registered, represented, traits):
        if part is not None and type(part) is not dict:
            return None
    subdivisions = None
    if raw is not None:
        if type(raw) is not list:
            return None
        subdivisions = tuple([sub.get("iso_code", _ABSENT) if type(sub) is dict else _ABSENT for sub in raw])
        if _ABSENT in subdivisions and any(type(sub) is not dict for sub in raw):
            return None
    flags = None
    if traits:
        flags = tuple([traits.get(name, _ABSENT) for name in _ANONYMIZER_KEYS])
        for flag in flags:  # 1 == True and hashes alike, but only a bool is a flag: anything else in full
            if flag is not _ABSENT and flag is not True and flag is not False:
                return None
    return (
        country.get("iso_code") if country else None,
        registered.get("iso_code") if registered else None,
        (represented.get("iso_code"), represented.get("type", _ABSENT)) if represented else None,
        subdivisions,
        flags,
    )


def _anonymous_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 Anonymous IP and GeoIP Anonymous Plus records (flags at the top level)."""
    return Facts(anonymizer=_anonymizer(record, where))


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

    __slots__ = (
        "_extract",
        "_memo",
        "anonymizer_capable",
        "has_ipv4",
        "info",
        "infos",
        "ip_version",
        "metadata",
        "reader",
    )

    def __init__(self, reader: Any, info: DatabaseInfo, metadata: Any, has_ipv4: bool = True) -> None:
        self.reader = reader
        self.info = info
        self.infos = (info,)  # what a Location answered by this database alone lists, shared
        self.metadata = metadata
        self.ip_version: int = metadata.ip_version
        self.has_ipv4 = has_ipv4
        """False for an IPv6 database without an IPv4 subtree: it says nothing about IPv4 addresses."""
        self.anonymizer_capable = info.schema == "anonymous"
        self._extract = _SCHEMAS[info.schema]
        self._memo: dict[tuple[Any, ...], Facts] | None = {} if info.schema == "geoip2" else None

    def facts(self, record: Any) -> Facts:
        """Adapt one raw record; an empty record means the database has nothing for that network."""
        if not record:
            return _NO_FACTS
        if type(record) is not dict and not isinstance(record, Mapping):  # the exact check first: ABCs are slow
            raise DatabaseError(f"{self.info.path}: unexpected record {type(record).__name__} (corrupt database?)")
        memo = self._memo
        if memo is None:
            return self._extract(record, self.info.path)
        key = _geoip2_key(record)
        try:
            found = memo.get(key) if key is not None else None
        except TypeError:  # an unhashable value where a code belongs: adapted in full (and refused) below
            key = found = None
        if found is None:
            found = self._extract(record, self.info.path)
            if key is not None and len(memo) < _MEMO_ENTRIES:
                memo[key] = found
        return found

    def close(self) -> None:
        self.reader.close()


_missing_extension_warned = False
LoadMode = Literal["copy", "mmap"]
"""``copy``: a private snapshot, safe when the file is rewritten in place; ``mmap``: pages shared by workers."""
LOAD_MODES: Final[tuple[LoadMode, ...]] = ("copy", "mmap")
_MAX_EPOCH: Final = 253402300799  # 9999-12-31T23:59:59Z


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
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        log.warning(message)
    return maxminddb.open_database(path, maxminddb.MODE_AUTO)


def _open_private_copy(path: str) -> Any:
    """Open a private snapshot of *path*, so rewriting the file in place later cannot crash the process.

    Readers mmap the file: if an operator (or a cron job with ``cp`` or ``wget -O``) overwrites it in place,
    lookups read torn data or the process dies of SIGBUS. A snapshot in an anonymous memory file (Linux
    ``memfd``) or an unlinked temporary file is immune; it costs the file's size in memory per process.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("geofence-" + os.path.basename(path), getattr(os, "MFD_CLOEXEC", 0))
        try:
            with open(path, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return _open_reader(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)  # the reader's mapping keeps the memory alive
    with open(path, "rb") as source, tempfile.NamedTemporaryFile(prefix="geofence-", delete=False) as snapshot:
        shutil.copyfileobj(source, snapshot, 1 << 20)
    try:
        return _open_reader(snapshot.name)
    finally:
        with contextlib.suppress(OSError):  # POSIX keeps the mapping; elsewhere the file stays until exit
            os.unlink(snapshot.name)


def open_database(path: str | os.PathLike[str], load: LoadMode = "copy") -> GeoDatabase:
    """Open *path*, check it is a sound MaxMind DB and detect its schema.

    *load* is ``"copy"`` (a private in-memory snapshot: safe against in-place rewrites of the file) or
    ``"mmap"`` (share the file's pages between processes; the file must then only ever be replaced
    atomically, by rename, as geoipupdate does). Raises :class:`DatabaseError` with a one-line message when
    the file is missing, is not a MaxMind DB, is corrupt at the first record, or holds a schema geofence
    cannot use (e.g. an ASN database).
    """
    name = os.fspath(path)
    if load not in LOAD_MODES:
        raise DatabaseError(f"load mode {load!r} is not one of {', '.join(LOAD_MODES)}")
    if not os.path.isfile(name):
        raise DatabaseError(f"{name}: no such database file")
    try:
        reader = _open_private_copy(name) if load == "copy" else _open_reader(name)
        metadata = reader.metadata()
    except (InvalidDatabaseError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{name}: not a readable MaxMind DB ({_one_line(exc)})") from None
    try:
        kind = str(metadata.database_type)
        if metadata.ip_version not in (4, 6) or metadata.record_size not in (24, 28, 32) or metadata.node_count < 1:
            raise DatabaseError(f"{name}: corrupt metadata (ip_version, record_size or node_count out of range)")
        if not isinstance(metadata.build_epoch, int) or not 0 <= metadata.build_epoch <= _MAX_EPOCH:
            raise DatabaseError(f"{name}: corrupt metadata (build_epoch {_short(metadata.build_epoch)})")
        first = _first_record(name, reader)
        schema = _schema_of_type(kind)
        if schema is None:
            schema = _schema_of_record(first)
        if not schema:
            raise DatabaseError(
                f"{name}: unsupported database type {kind!r}: geofence reads location databases "
                "(GeoIP2/GeoLite2 Country, City, Enterprise; DB-IP; ip-location-db country) and "
                "anonymizer databases (GeoIP2 Anonymous IP, GeoIP Anonymous Plus)"
            )
        has_ipv4 = metadata.ip_version == 4 or reader.get_with_prefix_len("::")[1] >= 96
    except BaseException:
        reader.close()
        raise
    info = DatabaseInfo(path=name, type=kind, build_epoch=metadata.build_epoch, schema=schema)
    return GeoDatabase(reader, info, metadata, has_ipv4)


def _first_record(name: str, reader: Any) -> Any:
    """The first record in tree order: a cheap corruption check, and the sample for schema sniffing."""
    try:
        first = next(iter(reader), None)
    except InvalidDatabaseError as exc:
        raise DatabaseError(f"{name}: not a readable MaxMind DB ({_one_line(exc)})") from None
    except ValueError:  # maxminddb cannot name networks of some IPv6 trees; the tree itself is fine
        return None
    return first[1] if first else None


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
