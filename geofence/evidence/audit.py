"""The audit writer: a tamper-evident, rotated JSON-lines record of access decisions.

The request path only enqueues a small tuple (:meth:`AuditWriter.submit`); a writer thread serialises, hashes
and writes (see :mod:`geofence.evidence.records` for the format and chain). Nothing is lost silently: a full
queue or a failing sink is counted and logged, and with ``on_failure="deny"`` :attr:`AuditWriter.failing`
tells the middleware to fail closed rather than serve controlled content it cannot record.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Final, Literal, Self

from ..errors import GeofenceError
from ..policy.decision import Decision
from ..request.ids import RequestId
from .records import GENESIS, decision_facts, seal
from .trail import AuditFile

__all__ = ["AuditWriter", "Include", "OnFailure"]

log = logging.getLogger("geofence")

Include = Literal["controlled", "denials", "all"]
OnFailure = Literal["log", "deny"]
_INCLUDES: Final = ("controlled", "denials", "all")
_ON_FAILURE: Final = ("log", "deny")
_STOP: Final = object()
_POLL_SECONDS: Final = 0.02  # how long records may wait for the writer when it was idle
_LOG_EVERY: Final = 10.0  # seconds between repeated drop/error warnings: counted always, logged not too often

_Item = tuple[float, str, Decision, "str | RequestId", str | None]
_now = time.time  # the record's time source: a module attribute so tests can move the clock across midnight


class AuditWriter:
    """Write audit records from a background thread.

    *path*: the current audit file (rotated files are renamed to ``PATH.YYYYMMDDTHHMMSSZ``); or None with
    *logger*: hand each line to that ``logging`` logger instead (the app's handlers decide where it goes).
    *key_env*: name of an environment variable holding the HMAC key; read once, here.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        include: Include = "controlled",
        full_ip: bool = False,
        key_env: str | None = None,
        max_bytes: int | None = 100 * 1024 * 1024,
        daily: bool = False,
        queue_size: int = 10_000,
        on_failure: OnFailure = "log",
        logger: str | None = None,
    ) -> None:
        if include not in _INCLUDES:
            raise GeofenceError(f"audit include must be one of {_INCLUDES}, not {include!r}")
        if on_failure not in _ON_FAILURE:
            raise GeofenceError(f"audit on_failure must be one of {_ON_FAILURE}, not {on_failure!r}")
        if (path is None) == (logger is None):
            raise GeofenceError("audit: give a file path or a logger name, not both or neither")
        if logger is not None and on_failure == "deny":
            raise GeofenceError(
                "audit: on_failure = deny needs a file path: a logging handler's write errors cannot be seen"
            )
        if max_bytes is not None and max_bytes <= 0:
            raise GeofenceError("audit max_bytes must be positive")
        if queue_size <= 0:
            raise GeofenceError("audit queue_size must be positive")
        self.key: bytes | None = None
        if key_env is not None:
            secret = os.environ.get(key_env)
            if not secret:
                raise GeofenceError(f"audit key: environment variable {key_env} is not set")
            self.key = secret.encode()
        self._out = (
            AuditFile(Path(str(path).replace("{pid}", str(os.getpid()))), max_bytes, daily)
            if path is not None
            else None
        )
        self.include: Include = include
        self.full_ip = full_ip
        self.on_failure: OnFailure = on_failure
        self.chain = uuid.uuid4().hex
        """This writer's chain id: every record names it, so interleaved writers' chains stay separable."""
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._seq = 0
        self._unflushed = 0  # lines buffered since the last successful flush
        # a new chain links to the file's last record: deleting a whole chain then shows
        self._prev = self._out.last_hash if self._out is not None else GENESIS
        self._sink_failed = False
        self._lost_since_write = False
        self._last_warning: dict[str, float] = {}
        self._lock = threading.Lock()
        self._logger = logging.getLogger(logger) if logger is not None else None
        # A deque, not queue.Queue: append is atomic and costs ~0.03 µs against ~0.5 µs for put_nowait (a lock
        # and a condition), and the request path pays it for every audited request. The writer polls.
        self._queue: deque[_Item | object] = deque()
        self._capacity = queue_size
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="geofence-audit", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a server stopping writes what is queued and logs the chain head

    # -- request path -----------------------------------------------------------------------------------------

    def wants(self, outcome: str, decision: Decision, restricted: bool) -> bool:
        """Whether *include* asks for this decision. ``controlled``: every decision on a class that restricts
        anyone (allowed or not), plus every denial and report-mode would-be denial anywhere."""
        if self.include == "all":
            return True
        if not decision.allowed or decision.would_deny or outcome in ("deny", "would_deny"):
            return True
        return self.include == "controlled" and restricted

    def submit(
        self,
        outcome: str,
        decision: Decision,
        request_id: str | RequestId,
        client_ip: str | None,
    ) -> bool:
        """Enqueue one decision; never blocks and never raises. A full queue is counted and logged.

        *request_id* may be a :class:`RequestId` not fixed yet: the writer thread then fixes it (``X-Request-ID``
        or a new id), so an allowed request pays only for the enqueue."""
        if not self._closed and len(self._queue) < self._capacity:
            self._queue.append((_now(), outcome, decision, request_id, client_ip if self.full_ip else None))
            return True
        else:
            with self._lock:
                self.dropped += 1
                self._lost_since_write = True
            self._warn("geofence: audit record dropped (%s): %d dropped so far", "queue full or writer closed")
        return False

    # -- health -----------------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        """False while the sink fails, after records were dropped (until the next successful write), or when
        the writer thread is gone."""
        return self._thread.is_alive() and not self._sink_failed and not self._lost_since_write

    @property
    def failing(self) -> bool:
        """True when ``on_failure="deny"`` and the writer is not :attr:`healthy`: the caller fails closed."""
        return self.on_failure == "deny" and not self.healthy

    @property
    def head(self) -> tuple[str, int, str]:
        """(chain, seq of the next record, hash of the last written record): keep it elsewhere for ``--head``."""
        with self._lock:
            return self.chain, self._seq, self._prev

    def counters(self) -> dict[str, int]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "queue_depth": self.queue_depth,
        }

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, close the file and log the chain head (an anchor for ``--head``)."""
        if self._closed:
            return
        self._closed = True
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        late = 0
        while self._queue:  # submitted while closing: counted, never silently lost
            late += self._queue.popleft() is not _STOP
        if late:
            with self._lock:
                self.dropped += late
            log.warning("geofence: %d audit records submitted after close were dropped", late)
        chain, seq, digest = self.head
        # WARNING, so default logging keeps it: the head is what `audit verify --head` needs to see a cut tail
        log.warning("geofence: audit chain %s closed after %d records, head %s", chain, seq, digest)
        if self._out is not None:
            self._out.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch: list[_Item | object] = []
                while len(batch) < 512:
                    try:
                        item = self._queue.popleft()
                    except IndexError:
                        break
                    batch.append(item)
                    if item is _STOP:
                        break
                if not batch:
                    self._wake.wait(_POLL_SECONDS)  # woken early only by close()
                    continue
                stop = self._write_batch(batch)
                if stop:
                    return
        finally:
            self._close_file()

    def _write_batch(self, batch: list[_Item | object]) -> bool:
        stop = False
        for item in batch:
            if item is _STOP:
                stop = True
                continue
            when, outcome, decision, given_id, client_ip = item  # type: ignore[misc]
            try:
                request_id = str(given_id)
                record = decision_facts(when, outcome, decision, request_id, client_ip)
                self._write(when, record)
            except Exception as exc:
                self._lost(1 + self._unflushed, f"audit write failed ({type(exc).__name__}: {exc})")
                self._close_file()  # reopen on the next record: the disk may come back
        if self._logger is not None and self._unflushed:
            self._committed()  # a logger takes each line as it comes: nothing is buffered here
        elif self._out is not None:
            try:
                flushed = self._out.flush()
            except OSError as exc:
                self._lost(self._unflushed, f"audit flush failed ({exc})")
                self._close_file()
            else:
                if flushed:
                    self._committed()
        return stop

    def _committed(self) -> None:
        """What was buffered reached the sink: count it written, and the sink healthy again."""
        with self._lock:
            self.written += self._unflushed
            self._unflushed = 0
            self._sink_failed = False
            self._lost_since_write = False

    def _lost(self, records: int, why: str) -> None:
        """Records that never reached the sink: errors, not writes (the chain shows them as a gap)."""
        with self._lock:
            self.errors += records
            self._unflushed = 0
            self._sink_failed = True
        self._warn("geofence: %s: %d records lost so far", why)

    def _write(self, when: float, record: dict[str, Any]) -> None:
        record["chain"] = self.chain
        record["seq"] = self._seq
        record["alg"] = "sha256" if self.key is None else "hmac-sha256"
        record["prev"] = self._prev
        line, digest = seal(record, self.key)
        if self._logger is not None:
            if not self._logger.isEnabledFor(logging.INFO):  # the record would vanish: a failure, not a write
                raise OSError(f"logger {self._logger.name!r} discards INFO records: set its level to INFO")
            self._logger.info(line.rstrip("\n"))
        else:
            assert self._out is not None
            if self._out.write(when, line):  # rotated first: the lines before it were flushed then
                self._committed()
        self._seq += 1  # the chain moves on even if this line is later lost: verify then shows the gap
        self._prev = digest
        self._unflushed += 1

    def _close_file(self) -> None:
        if self._out is not None:
            self._out.close_file()

    @property
    def path(self) -> Path | None:
        """The current audit file (``{pid}`` filled in), or None for a logger sink."""
        return self._out.path if self._out is not None else None

    def _warn(self, message: str, detail: str) -> None:
        """Log a drop or a write error: the first at once, then at most one per kind every few seconds (the
        counters keep the exact numbers) so a full disk cannot flood the log it may share."""
        now = time.monotonic()
        last = self._last_warning.get(message)
        if last is None or now - last >= _LOG_EVERY:
            self._last_warning[message] = now
            log.warning(message, detail, self.dropped if "dropped" in message else self.errors)
