"""What every benchmark module shares: ASGI scopes, timing loops, statistics, addresses, tables, the machine.

Timing is done on the ASGI call itself: ``await app(scope, receive, send)`` with a no-op ``send``. Batch
timings (:func:`per_request_us`) divide one ``perf_counter_ns`` span by the request count; per-request
timings (:func:`each_request_ns`) time every call, for means and tails. Nothing here disables the garbage
collector: its passes are part of what a server pays.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns as time_ns
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"

Scope = dict[str, Any]
BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"host", b"api.example"),
    (b"user-agent", b"bench"),
    (b"accept", b"*/*"),
)


def scope(
    client: str, path: str = "/v1/models", headers: Iterable[tuple[bytes, bytes]] = (), method: str = "GET"
) -> Scope:
    """An HTTP scope as a server builds it, from peer *client* (add ``x-forwarded-for`` in *headers*)."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [*BASE_HEADERS, *headers], "client": (client, 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


def per_request_us(
    app: Any, scopes: Sequence[Scope], collect: bool = True, settle: Callable[[int], None] | None = None
) -> float:
    """Mean µs per request over *scopes*, one span (each scope is copied: apps may write into it).

    With *collect*, a full garbage collection first, so a batch does not pay for the garbage of the batch before
    it (variants run in turn); collections triggered by the batch itself are measured. *settle(n)*, inside the
    span: wait for work the batch of *n* requests left to a background thread (the audit writer), so that work
    is counted here and not in whichever variant runs next.
    """
    if collect:
        gc.collect()

    async def run() -> float:
        start = time_ns()
        for s in scopes:
            await app(dict(s), receive, send)
        if settle is not None:
            settle(len(scopes))
        return (time_ns() - start) / len(scopes) / 1000

    return asyncio.run(run())


def each_request_ns(app: Any, scopes: Iterable[Scope]) -> list[int]:
    """Nanoseconds of every request, timed one by one (building the scope is outside the timing)."""

    async def run() -> list[int]:
        out: list[int] = []
        append = out.append
        for s in scopes:
            start = time_ns()
            await app(s, receive, send)
            append(time_ns() - start)
        return out

    return asyncio.run(run())


def status_of(app: Any, s: Scope) -> int:
    """The status *app* answers *s* with (to check a variant measures the path it claims to)."""
    seen: list[int] = []

    async def capture(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.append(message["status"])

    asyncio.run(app(dict(s), receive, capture))
    return seen[0] if seen else 0


def interleaved(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each run once per round, in turn (the order rotating), so slow phases of a shared machine hit every variant
    alike and none always runs right after the same neighbour."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(runs[name]())
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def tail(samples_ns: Sequence[int]) -> dict[str, float]:
    """Mean, p50, p99, p99.9 and max of per-request nanoseconds, in µs."""
    ordered = sorted(samples_ns)
    n = len(ordered)

    def pct(p: float) -> float:
        return ordered[min(n - 1, int(p / 100 * n))] / 1000

    return {
        "mean": sum(ordered) / n / 1000, "p50": pct(50), "p99": pct(99), "p99.9": pct(99.9),
        "max": ordered[-1] / 1000, "n": n,
    }  # fmt: skip


def rss_kib() -> int:
    """This process's resident set size (VmRSS), in KiB; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- addresses ------------------------------------------------------------------------------------------

_NOT_GLOBAL_V4 = (  # IANA special-purpose IPv4 ranges (RFC 6890 and successors), as (first, last) integers
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
)  # fmt: skip


def _ranges() -> tuple[list[int], list[int]]:
    firsts, lasts = [], []
    for text in sorted(_NOT_GLOBAL_V4, key=lambda t: socket.inet_aton(t.split("/")[0])):
        base, length = text.split("/")
        first = int.from_bytes(socket.inet_aton(base), "big")
        firsts.append(first)
        lasts.append(first + (1 << (32 - int(length))) - 1)
    return firsts, lasts


_FIRSTS, _LASTS = _ranges()


def is_public_v4(value: int) -> bool:
    i = bisect.bisect_right(_FIRSTS, value) - 1
    return i < 0 or value > _LASTS[i]


def v4_text(value: int) -> str:
    return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))


def public_ipv4(rng: random.Random, n: int) -> list[str]:
    """*n* distinct random public IPv4 addresses (as clients: most share a database network with others)."""
    seen: set[int] = set()
    out: list[str] = []
    while len(out) < n:
        value = rng.getrandbits(32)
        if value not in seen and is_public_v4(value):
            seen.add(value)
            out.append(v4_text(value))
    return out


def fresh_networks(rng: random.Random, reader: Any) -> Iterator[str]:
    """Endless random public IPv4 addresses the database knows, each in a database network not yielded before."""
    seen: set[tuple[int, int]] = set()
    while True:
        value = rng.getrandbits(32)
        if not is_public_v4(value):
            continue
        text = v4_text(value)
        record, prefix = reader.get_with_prefix_len(text)
        network = (prefix, value >> (32 - prefix))
        if record and network not in seen:
            seen.add(network)
            yield text


# --- output ---------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A result table, printed as aligned text and written as Markdown (first column left, others right)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        widths = [max(len(str(r[i])) for r in [self.headers, *self.rows]) for i in range(len(self.headers))]

        def line(cells: Sequence[str]) -> str:
            first = f"  {cells[0]:<{widths[0]}}"
            return first + "".join(f"  {c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))

        out = [self.title, line(self.headers), *(line(r) for r in self.rows)]
        return "\n".join([*out, *(f"  {n}" for n in self.notes)])

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join([":--", *(["--:"] * (len(self.headers) - 1))]) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join([*out, *([""] + [f"{n}  " for n in self.notes] if self.notes else [])])


def us(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:+,.{digits}f}"


def times(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}x"


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, OS, and the libraries and geofence revision measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import maxminddb

    def version(dist: str) -> str | None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version(dist)
        except PackageNotFoundError:
            return None

    git = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "geofence")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "maxminddb": getattr(maxminddb, "__version__", None),
        "maxminddb_c_extension": _has_extension(),
        "versions": {d: version(d) for d in ("geofence", "starlette", "fastapi", "uvicorn", "fastapi-guard", "PyJWT")},
        "geofence_commit": f"{git}{' + uncommitted changes in geofence/' if dirty else ''}" if git else None,
    }


def _has_extension() -> bool:
    try:
        import maxminddb.extension  # noqa: F401
    except ImportError:
        return False
    return True


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_line(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores; {m['implementation']} {m['python']}; {m['os']}"


def audit_settler(middleware: Any, timeout: float = 60.0) -> Callable[[int], None]:
    """A *settle* for :func:`per_request_us`: waits until the middleware's audit writer has written, dropped or
    failed every record of the batch, at the records-per-request rate it measures on its first batch (drained,
    then counted: records reach ``written`` a batch of the writer's at a time). Raises rather than wait past
    *timeout*, or when the first batch recorded nothing (the variant would measure no audit trail)."""
    rate: list[int] = []

    def done() -> int:
        writer = middleware._live.state.audit
        return int(writer.written + writer.dropped + writer.errors)

    base = [done()]

    def settle(n: int) -> None:
        writer = middleware._live.state.audit
        deadline = time.monotonic() + timeout
        if not rate:  # the first batch: wait for the queue to empty and the count to stand still
            last = -1
            while writer.queue_depth or done() != last:
                last = done()
                time.sleep(0.005)
            rate.append(round((done() - base[0]) / n))  # whole records per request (a stray one aside)
            if rate[0] == 0:
                raise RuntimeError("audit variant: its first batch recorded nothing")
        else:
            target = base[0] + rate[0] * n
            while done() < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"audit writer: {target - done()} records still unwritten after {timeout} s")
                time.sleep(0.0001)
        base[0] = done()

    return settle
