"""Updating MaxMind databases in place, speaking geoipupdate's protocol, without ever serving a bad file.

A new file is written beside the target, checked (it opens, same type and IP version, not older, canary lookups
work) and only then renamed over the target: a running middleware (or its reloader) sees the old file or the new
one, never a torn or unvetted one. The previous file is kept as ``ID.mmdb.previous`` for a quick rollback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from . import __version__
from .databases import GeoDatabase, open_database
from .errors import DatabaseError, GeofenceError
from .geoipconf import EDITION_ID, LOCK_FILE_NAME, UpdateConfig, check_url

__all__ = ["EditionResult", "LockBusyError", "UpdateError", "update_databases", "update_from_url"]

_FUTURE_SLACK: Final = 86_400  # clocks and build stamps disagree by hours, not by years

Progress = Callable[[str, int, int | None], None]
"""``progress(edition, bytes_so_far, total_or_None)``, called while downloading."""

_NO_HASH: Final = "0" * 32  # geoipupdate's hash of a missing file: the server then always offers one
_MD5: Final = re.compile(r"[0-9a-f]{32}")
_DATE: Final = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_CHUNK: Final = 1 << 16
_MAX_SIZE: Final = 4 << 30  # uncompressed: a gzip bomb must not fill the disk
_CANARIES: Final = ("1.1.1.1", "8.8.8.8", "81.2.69.160", "2001:4860:4860::8888", "2a02:ff0::1")


class UpdateError(GeofenceError):
    """One edition could not be updated; the message is one line."""


class LockBusyError(GeofenceError):
    """Another updater (geofence or geoipupdate) holds the lock."""


@dataclass(frozen=True)
class EditionResult:
    """The outcome for one edition, as ``--json`` prints it."""

    edition: str
    status: str  # updated, unchanged or failed
    path: str
    md5: str | None = None
    build_date: str | None = None
    error: str | None = None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on geoipupdate's lock file: two updaters never write the same directory at once."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise UpdateError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockBusyError(f"another update is running (lock file {path} is held)") from None
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def file_digest(path: Path, algorithm: str = "md5") -> str | None:
    """Hex digest of *path*, None when it does not exist."""
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()
    except FileNotFoundError:
        return None


def _get(url: str, timeout: float, auth: str | None = None) -> Any:
    """GET *url*: a one-line :class:`UpdateError` for every way it can fail, a timeout on every socket operation."""
    import http.client
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")  # never user:password
    request = urllib.request.Request(url, headers={"User-Agent": f"geofence/{__version__}"})
    if auth:  # unredirected: the download redirects to storage, which must not see the licence key
        request.add_unredirected_header("Authorization", auth)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if auth and exc.code in (401, 403):
            raise UpdateError(f"wrong account ID or licence key (HTTP {exc.code} from {origin})") from None
        raise UpdateError(f"{origin} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise UpdateError(f"cannot reach {origin}: {_reason(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UpdateError(f"cannot reach {origin}: {_reason(exc)}") from None


class _Client:
    """geoipupdate's two requests, authenticated with the account ID and licence key."""

    def __init__(self, config: UpdateConfig, timeout: float) -> None:
        self.base = config.url
        self.timeout = timeout
        token = base64.b64encode(f"{config.account_id}:{config.license_key}".encode()).decode("ascii")
        self.auth = f"Basic {token}"

    def open(self, path_and_query: str) -> Any:
        """Edition IDs are checked to be ``[A-Za-z0-9_.-]`` and dates digits: nothing here needs quoting."""
        return _get(self.base + path_and_query, self.timeout, self.auth)

    def metadata(self, edition: str) -> tuple[str, str]:
        """(md5, YYYYMMDD) of the newest build of *edition*."""
        import http.client

        with self.open(f"/geoip/updates/metadata?edition_id={edition}") as response:
            try:
                body = json.loads(response.read(1 << 20))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise UpdateError(f"unreadable metadata from {self.base}: {_reason(exc)}") from None
        found = body.get("databases") if isinstance(body, dict) else None
        if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], dict):
            raise UpdateError(f"metadata from {self.base} does not describe edition {edition}")
        md5, date = found[0].get("md5"), found[0].get("date")
        match = _DATE.fullmatch(date) if isinstance(date, str) else None
        if not isinstance(md5, str) or not _MD5.fullmatch(md5.lower()) or match is None:
            raise UpdateError(f"metadata from {self.base} has no valid md5 and date for {edition}")
        return md5.lower(), "".join(match.groups())


def _reason(exc: object) -> str:
    """A short, single-line cause; socket timeouts spell themselves several ways."""
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "timed out"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _copy(source: Any, out: IO[bytes], edition: str) -> str:
    """Copy *source* to *out* (a gzip bomb must not fill the disk); return the copy's MD5."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    while source is not None and (chunk := source.read(_CHUNK)):
        size += len(chunk)
        if size > _MAX_SIZE:
            raise UpdateError(f"{edition}: database is larger than {_MAX_SIZE} bytes")
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def _extract(download: _Download, out: IO[bytes], edition: str, kind: str) -> str:
    """Unpack the database from *download* (``tar.gz``, ``gz`` or plain ``mmdb``) into *out*; return its MD5."""
    import gzip
    import http.client

    try:
        if kind == "mmdb":
            return _copy(download, out, edition)
        if kind == "gz":
            with gzip.GzipFile(fileobj=download, mode="rb") as unzipped:  # type: ignore[call-overload]
                return _copy(unzipped, out, edition)
        with tarfile.open(fileobj=download, mode="r|gz") as archive:  # type: ignore[call-overload]
            for member in archive:
                if member.isfile() and member.name.endswith(".mmdb"):
                    md5 = _copy(archive.extractfile(member), out, edition)
                    while download.read(_CHUNK):  # the rest, for the SHA-256 of the whole file
                        pass
                    return str(md5)
    except (tarfile.TarError, EOFError, zlib.error, http.client.HTTPException, gzip.BadGzipFile) as exc:
        raise UpdateError(f"{edition}: corrupt or truncated archive ({_reason(exc)})") from None
    except OSError as exc:
        raise UpdateError(f"{edition}: download failed ({_reason(exc)})") from None
    raise UpdateError(f"{edition}: the archive holds no .mmdb file")


class _Download:
    """A response being read: reports progress and hashes the bytes as served (for ``--sha256``)."""

    def __init__(self, response: Any, edition: str, progress: Progress | None) -> None:
        length = response.headers.get("Content-Length") or ""
        self.raw, self.edition, self.progress, self.done = response, edition, progress, 0
        self.total = int(length) if length.isdigit() else None
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self.raw.read(size)
        self.done += len(data)
        self.sha256.update(data)
        if self.progress is not None:
            self.progress(self.edition, self.done, self.total)
        return data


def validate_candidate(candidate: Path, current: Path, force: bool) -> GeoDatabase:
    """Open *candidate*, refusing anything a running service should not load; the caller closes it."""
    try:
        new = open_database(candidate, load="mmap")
    except DatabaseError as exc:
        raise UpdateError(f"downloaded database is unusable: {str(exc).removeprefix(str(candidate) + ': ')}") from None
    try:
        _canaries(new)
        _compare(new, current, force)
    except BaseException:
        new.close()
        raise
    return new


def _compare(new: GeoDatabase, current: Path, force: bool) -> None:
    if new.info.build_epoch > time.time() + _FUTURE_SLACK:  # else it would pin every later update, and freshness
        raise UpdateError(f"downloaded database claims a build date in the future ({new.info.build_date})")
    try:
        old = open_database(current, load="mmap")
    except DatabaseError:
        return  # missing or broken: the update is the repair
    with contextlib.closing(old):
        was, now = old.info, new.info
        if now.type != was.type:
            raise UpdateError(f"downloaded database is {now.type!r}, the current one {was.type!r}")
        if new.ip_version != old.ip_version:
            raise UpdateError(f"downloaded database is IPv{new.ip_version}, the current one IPv{old.ip_version}")
        if now.build_epoch < was.build_epoch and not force:
            raise UpdateError(
                f"downloaded database (built {now.build_date}) is older than the current one "
                f"(built {was.build_date}); --force installs it anyway"
            )


def _canaries(db: GeoDatabase) -> None:
    """A few lookups through the real code path: a file can open yet fail on its first real record."""
    for ip in _CANARIES:
        if ":" in ip and db.ip_version == 4:
            continue
        try:
            db.facts(db.reader.get(ip))
        except (DatabaseError, ValueError, UnicodeDecodeError, LookupError) as exc:
            raise UpdateError(f"downloaded database fails a lookup of {ip}: {exc}") from None


def _install(tmp: Path, target: Path) -> None:
    """Keep the current file as ``.previous`` (by hard link, so *target* never disappears), then rename."""
    if target.exists():
        previous = target.with_name(target.name + ".previous")
        staging = target.with_name(f".{target.name}.previous.tmp")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        try:
            os.link(target, staging)
        except OSError:  # file systems without hard links
            shutil.copy2(target, staging)
        os.replace(staging, previous)
    os.replace(tmp, target)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable: without it a crash can bring back the old directory entry."""
    with contextlib.suppress(OSError):  # not every platform or file system can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _stage(target: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file beside *target* (same file system, so the final rename is atomic), removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    tmp = Path(handle.name)
    try:
        with handle:
            yield handle, tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _commit(handle: IO[bytes], tmp: Path, target: Path, force: bool) -> str:
    """fsync, validate and rename *tmp* over *target*; return the new build date."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)  # temporary files are private
    db = validate_candidate(tmp, target, force)
    build_date = db.info.build_date.isoformat()
    db.close()
    _install(tmp, target)
    return build_date


def _update_edition(
    client: _Client, edition: str, directory: Path, force: bool = False, progress: Progress | None = None
) -> EditionResult:
    """Bring ``directory/EDITION.mmdb`` up to date; raises :class:`UpdateError` with a one-line reason."""
    target = directory / f"{edition}.mmdb"
    local_md5 = file_digest(target) or _NO_HASH
    remote_md5, date = client.metadata(edition)
    if remote_md5 == local_md5:
        return EditionResult(edition, "unchanged", str(target), local_md5, _build_date(target))
    with _stage(target) as (handle, tmp):
        with client.open(f"/geoip/databases/{edition}/download?date={date}&suffix=tar.gz") as response:
            got = _extract(_Download(response, edition, progress), handle, edition, "tar.gz")
        if got != remote_md5:
            raise UpdateError(f"{edition}: checksum mismatch (downloaded {got}, metadata says {remote_md5})")
        build_date = _commit(handle, tmp, target, force)
    return EditionResult(edition, "updated", str(target), got, build_date)


def update_from_url(
    url: str,
    output: Path,
    sha256: str | None = None,
    timeout: float = 60.0,
    force: bool = False,
    progress: Progress | None = None,
) -> EditionResult:
    """Refresh *output* from a plain download (``.mmdb``, ``.mmdb.gz`` or ``.tar.gz``), e.g. DB-IP's Lite files.

    *sha256* is of the file as served: a download that does not match is refused, and a plain ``.mmdb`` already
    installed with that digest is not fetched again. Without it only the validation guards the service.
    """
    check_url(url, "--url", "the download could be altered on the way")
    name = output.name.removesuffix(".mmdb")
    path = url.split("?", 1)[0].lower()
    kind = "tar.gz" if path.endswith((".tar.gz", ".tgz")) else "gz" if path.endswith(".gz") else "mmdb"
    with _lock(output.parent / LOCK_FILE_NAME):
        try:
            if sha256 and file_digest(output, "sha256") == sha256.lower():
                return EditionResult(name, "unchanged", str(output), file_digest(output), _build_date(output))
            with _stage(output) as (handle, tmp):
                with _get(url, timeout) as response:
                    download = _Download(response, name, progress)
                    got = _extract(download, handle, name, kind)
                if sha256 and download.sha256.hexdigest() != sha256.lower():
                    raise UpdateError(f"checksum mismatch (SHA-256 {download.sha256.hexdigest()}, expected {sha256})")
                if unchanged := got == file_digest(output):
                    tmp.unlink()
                else:
                    build_date = _commit(handle, tmp, output, force)
        except (UpdateError, OSError) as exc:
            return EditionResult(name, "failed", str(output), error=_failure(exc, name))
    if unchanged:
        return EditionResult(name, "unchanged", str(output), got, _build_date(output))
    return EditionResult(name, "updated", str(output), got, build_date)


def _failure(exc: BaseException, name: str) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or 'file system error'}: {_reason(exc)}"
    return str(exc).removeprefix(f"{name}: ")


def _build_date(path: Path) -> str | None:
    try:
        db = open_database(path, load="mmap")
    except DatabaseError:
        return None
    try:
        return db.info.build_date.isoformat()
    finally:
        db.close()


def update_databases(
    config: UpdateConfig, timeout: float = 60.0, force: bool = False, progress: Progress | None = None
) -> list[EditionResult]:
    """Update every configured edition under the lock; a failing edition does not stop the others."""
    client = _Client(config, timeout)
    results = []
    with _lock(config.lock_path):
        for edition in config.edition_ids:
            try:
                if not EDITION_ID.fullmatch(edition):  # it names a file: nothing that climbs out of the directory
                    raise UpdateError(f"edition ID {edition!r} is not a MaxMind edition ID")
                results.append(_update_edition(client, edition, config.database_directory, force, progress))
            except (UpdateError, OSError) as exc:
                path = str(config.database_directory / f"{edition}.mmdb")
                results.append(EditionResult(edition, "failed", path, error=_failure(exc, edition)))
    return results
