"""The audit trail's file: appended by one writer only (a lock beside it), rotated by size or at UTC midnight.

Several writers on one file would rename (rotate) each other's files away, so a second writer is refused; worker
processes put ``{pid}`` in the path. A new chain starts from the file's last record (:attr:`AuditFile.last_hash`),
so a whole chain deleted between two others breaks the next one's link.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from ..errors import GeofenceError
from .records import GENESIS

__all__ = ["AuditFile"]


class AuditFile:
    """One audit file, owned by one :class:`geofence.evidence.audit.AuditWriter`."""

    def __init__(self, path: Path, max_bytes: int | None, daily: bool) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.daily = daily
        self._lockfile = self._claim(path)
        self.last_hash = _last_hash(path)
        self._file: IO[str] | None = None
        self._size = 0
        self._day: date | None = None

    def write(self, when: float, line: str) -> bool:
        """Append *line* (buffered); True when the file was rotated first, which flushed the lines before it."""
        rotated = self._prepare(when, len(line))
        assert self._file is not None
        self._file.write(line)
        self._size += len(line)
        return rotated

    def flush(self) -> bool:
        """Push buffered lines to the file; False when no file is open (nothing buffered). Raises OSError."""
        if self._file is None:
            return False
        self._file.flush()
        return True

    def release(self) -> None:
        """Close the file and let another writer have it."""
        self.close_file()
        if self._lockfile is not None:
            self._lockfile.close()

    def _prepare(self, when: float, incoming: int) -> bool:
        """Open the file, rotating it first when *incoming* bytes would pass *max_bytes* or the UTC day changed;
        True when it rotated."""
        assert self.path is not None
        today = datetime.fromtimestamp(when, UTC).date()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="ascii", newline="")
            self._size = self._file.tell()
            if self._day is None and self._size:
                self._day = datetime.fromtimestamp(self.path.stat().st_mtime, UTC).date()
        too_big = self.max_bytes is not None and self._size and self._size + incoming > self.max_bytes
        new_day = self.daily and self._day is not None and self._day != today and self._size
        if too_big or new_day:
            self._rotate(when)
        self._day = today
        return bool(too_big or new_day)

    @staticmethod
    def _claim(path: Path) -> IO[bytes] | None:
        """One writer per file: several writers would rename (rotate) each other's files away. Two processes
        — uvicorn workers — need ``{pid}`` in the path; a second writer here is a configuration error."""
        import fcntl

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "wb")  # held for the writer's life
        except OSError:
            return None  # an unwritable place: every write will fail, be counted and (under deny) fail closed
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise GeofenceError(
                f"audit: {path} is already written by another process or writer; with several workers put "
                '{pid} in [audit] path (path = "audit-{pid}.jsonl")'
            ) from None
        return handle

    def _rotate(self, when: float) -> None:
        assert self.path is not None
        if self._file is not None:
            self._file.flush()  # a failure here is the caller's loss to count, never a silent one
        self.close_file()
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.{stamp}.{n}")
            n += 1
        os.replace(self.path, target)
        self._file = open(self.path, "a", encoding="ascii", newline="")
        self._size = 0

    def close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def _last_hash(path: Path) -> str:
    """The hash of the last record already in *path* (GENESIS for none), so a new chain starts from it: a whole
    chain deleted between two others then breaks the link of the next one."""
    if not path.is_file():  # none yet, or a device (reading /dev/full never ends)
        return GENESIS
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    except OSError:
        return GENESIS
    try:
        found = json.loads(tail).get("hash")
    except (ValueError, AttributeError):
        return GENESIS
    return found if isinstance(found, str) and len(found) == 64 else GENESIS
