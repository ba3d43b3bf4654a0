"""Updating MaxMind databases in place, speaking geoipupdate's protocol, without ever serving a bad file.

A new file is written beside the target, checked (it opens, same type and IP version, not older, canary lookups
work) and only then renamed over the target: a running middleware (or its reloader) sees the old file or the new
one, never a torn or unvetted one. The previous file is kept as ``ID.mmdb.previous`` for a quick rollback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from ...errors import DatabaseError, LockBusyError, UpdateError
from ..databases import GeoDatabase, open_database
from .conf import EDITION_ID, LOCK_FILE_NAME, UpdateConfig, check_url
from .downloads import Download, MaxMindClient, Progress, extract, get, reason

__all__ = ["EditionResult", "LockBusyError", "UpdateError", "update_databases", "update_from_url"]

_FUTURE_SLACK: Final = 86_400  # clocks and build stamps disagree by hours, not by years

_NO_HASH: Final = "0" * 32  # geoipupdate's hash of a missing file: the server then always offers one
_CANARIES: Final = ("1.1.1.1", "8.8.8.8", "81.2.69.160", "2001:4860:4860::8888", "2a02:ff0::1")


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
    client: MaxMindClient, edition: str, directory: Path, force: bool = False, progress: Progress | None = None
) -> EditionResult:
    """Bring ``directory/EDITION.mmdb`` up to date; raises :class:`UpdateError` with a one-line reason."""
    target = directory / f"{edition}.mmdb"
    local_md5 = file_digest(target) or _NO_HASH
    remote_md5, date = client.metadata(edition)
    if remote_md5 == local_md5:
        return EditionResult(edition, "unchanged", str(target), local_md5, _build_date(target))
    with _stage(target) as (handle, tmp):
        with client.open(f"/geoip/databases/{edition}/download?date={date}&suffix=tar.gz") as response:
            got = extract(Download(response, edition, progress), handle, edition, "tar.gz")
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
                with get(url, timeout) as response:
                    download = Download(response, name, progress)
                    got = extract(download, handle, name, kind)
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
        return f"{exc.filename or 'file system error'}: {reason(exc)}"
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
    client = MaxMindClient(config, timeout)
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
