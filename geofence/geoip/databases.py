"""Opening MaxMind-format databases: type and schema detection, the private in-memory snapshot (``load =
"copy"``), metadata checks, and :class:`GeoDatabase`, which reads records with the ``maxminddb`` C extension
and adapts them with :mod:`geofence.geoip.records` (remembering each distinct GeoIP2 answer).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from ..errors import DatabaseError
from ..native import core
from ..resources import data_path
from .location import DatabaseInfo
from .records import NO_FACTS, SCHEMAS, Facts, geoip2_key, schema_of_record, short

__all__ = ["LOAD_MODES", "Facts", "GeoDatabase", "LoadMode", "default_database_path", "open_database"]

log = logging.getLogger("geofence")

_DATA_FILE: Final = "dbip-country-lite.mmdb"

_GEOIP2_TYPES: Final = re.compile(
    r"(GeoIP2|GeoLite2)-(Country|City|Enterprise|Precision-(City|Country|Enterprise))([-_].*)?"
    r"|DBIP-(Country|City|Location)\b.*"
)
_ANONYMOUS_TYPES: Final = re.compile(r"GeoIP2?-Anonymous-(IP|Plus)([-_].*)?")
_UNUSABLE_TYPES: Final = re.compile(r".*(ASN|ISP|Connection-Type|Domain|User-Count|IP-Risk).*")

_MEMO_ENTRIES: Final = 1 << 14  # distinct answers remembered per database (~10 MB; a city database has ~10^4)


class GeoDatabase:
    """One open database: its reader, its identity and the adapter for its schema.

    ``anonymizer_capable`` databases answer by silence too: an address missing from an Anonymous IP
    database is known not to be an anonymizer.
    """

    __slots__ = (
        "_extract",
        "_memo",
        "anonymizer_capable",
        "buffer",
        "has_ipv4",
        "info",
        "infos",
        "ip_version",
        "metadata",
        "reader",
    )

    def __init__(
        self, reader: Any, info: DatabaseInfo, metadata: Any, has_ipv4: bool = True, buffer: mmap.mmap | None = None
    ) -> None:
        self.reader = reader
        self.buffer = buffer
        """The same bytes the reader reads (one inode, mapped once more), for the native tree walk; or None."""
        self.info = info
        self.infos = (info,)  # what a Location answered by this database alone lists, shared
        self.metadata = metadata
        self.ip_version: int = metadata.ip_version
        self.has_ipv4 = has_ipv4
        """False for an IPv6 database without an IPv4 subtree: it says nothing about IPv4 addresses."""
        self.anonymizer_capable = info.schema == "anonymous"
        self._extract = SCHEMAS[info.schema]
        self._memo: dict[tuple[Any, ...], Facts] | None = {} if info.schema == "geoip2" else None

    def facts(self, record: Any) -> Facts:
        """Adapt one raw record; an empty record means the database has nothing for that network."""
        if not record:
            return NO_FACTS
        if type(record) is not dict and not isinstance(record, Mapping):  # the exact check first: ABCs are slow
            raise DatabaseError(f"{self.info.path}: unexpected record {type(record).__name__} (corrupt database?)")
        memo = self._memo
        if memo is None:
            return self._extract(record, self.info.path)
        key = geoip2_key(record)
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
        self.buffer = None  # the mapping ends with the last native tree that walks it


def _map(fd: int) -> mmap.mmap | None:
    """The file behind *fd*, mapped read-only for the native tree walk (None without the extension)."""
    return mmap.mmap(fd, 0, prot=mmap.PROT_READ) if core is not None else None


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


def _open_shared(path: str) -> tuple[Any, mmap.mmap | None]:
    """``load = "mmap"``: the reader, and (for the native walk) the same inode mapped once more — through one
    descriptor, so a rename between two opens can never pair one file's tree with another's records."""
    if core is None or not os.path.isdir("/proc/self/fd"):
        return _open_reader(path), None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _open_reader(f"/proc/self/fd/{fd}"), _map(fd)
    finally:
        os.close(fd)


def _open_private_copy(path: str) -> tuple[Any, mmap.mmap | None]:
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
            return _open_reader(f"/proc/self/fd/{fd}"), _map(fd)
        finally:
            os.close(fd)  # the reader's mapping (and ours) keeps the memory alive
    with open(path, "rb") as source, tempfile.NamedTemporaryFile(prefix="geofence-", delete=False) as snapshot:
        shutil.copyfileobj(source, snapshot, 1 << 20)
    try:
        with open(snapshot.name, "rb") as mapped:
            return _open_reader(snapshot.name), _map(mapped.fileno())
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
        reader, buffer = _open_private_copy(name) if load == "copy" else _open_shared(name)
        metadata = reader.metadata()
    except (InvalidDatabaseError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{name}: not a readable MaxMind DB ({_one_line(exc)})") from None
    try:
        kind = str(metadata.database_type)
        if metadata.ip_version not in (4, 6) or metadata.record_size not in (24, 28, 32) or metadata.node_count < 1:
            raise DatabaseError(f"{name}: corrupt metadata (ip_version, record_size or node_count out of range)")
        if not isinstance(metadata.build_epoch, int) or not 0 <= metadata.build_epoch <= _MAX_EPOCH:
            raise DatabaseError(f"{name}: corrupt metadata (build_epoch {short(metadata.build_epoch)})")
        first = _first_record(name, reader)
        schema = _schema_of_type(kind)
        if schema is None:
            schema = schema_of_record(first)
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
    return GeoDatabase(reader, info, metadata, has_ipv4, buffer)


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
