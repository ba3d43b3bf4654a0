"""The audit writer and its hash chain, with real files, real rotation and real threads."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from geofence.errors import GeofenceError
from geofence.evidence import audit
from geofence.evidence.audit import AuditWriter
from geofence.evidence.records import GENESIS, seal, verify_files
from geofence.geoip.location import Anonymizer, DatabaseInfo, Location
from geofence.identity.claims import Identity
from geofence.policy.decision import Decision, decide
from geofence.policy.load import Policy, parse_policy

from .conftest import wait_until

POLICY: Policy = parse_policy(
    {
        "defaults": {"class": "OPEN"},
        "classes": {
            "OPEN": {"unknown_location": "allow"},
            "EAR99": {"deny_destinations": ["CU"]},
            "CTRL": {"allow_destinations": ["US"], "persons": "us_only"},
            "TRIAL": {"allow_destinations": ["US"], "mode": "report"},
        },
    }
)
DB = DatabaseInfo("/data/city.mmdb", "GeoIP2-City", 1_700_000_000, "geoip2")
US_PERSON = Identity(True, ("US",), subject_hash="ab" * 16, assurance_level="ial2", trust_framework="nist_800_63A")


def loc(country: str | None, *subdivisions: str, **kw: Any) -> Location:
    return Location("203.0.113.0/24", country, subdivisions=subdivisions, databases=(DB,), **kw)


def decision(export_class: str = "EAR99", country: str | None = "CU", identity: Identity | None = None) -> Decision:
    return decide(POLICY, export_class, loc(country), identity)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outcome(d: Decision) -> str:
    return "deny" if not d.allowed else "would_deny" if d.would_deny else "allow"


def write(path: Path, decisions: list[Decision], **kw: Any) -> AuditWriter:
    with AuditWriter(path, **kw) as writer:
        for i, d in enumerate(decisions):
            writer.submit(outcome(d), d, f"req-{i}", "203.0.113.7")
    return writer


def test_records_carry_the_facts_and_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    anon = decide(POLICY, "CTRL", loc("US", "US-CA", anonymizer=Anonymizer(vpn=True)), US_PERSON)
    writer = write(path, [decision(), anon, decide(POLICY, "OPEN", None)])
    assert writer.counters() == {"written": 3, "dropped": 0, "errors": 0, "queue_depth": 0}
    first, second, third = lines(path)
    assert first["outcome"] == "deny" and first["status"] == 451 and first["class"] == "EAR99"
    assert first["reasons"][0]["code"] == "destination_denied" and first["mode"] == "enforce"
    assert first["request_id"] == "req-0" and first["policy"] == POLICY.version
    assert first["facts"]["location"]["country"] == "CU" and first["facts"]["location"]["network"] == "203.0.113.0/24"
    assert "client_ip" not in first["facts"]  # the network only, unless full_ip
    assert first["databases"] == [{"type": "GeoIP2-City", "build_date": "2023-11-14"}]
    assert datetime.fromisoformat(first["time"].replace("Z", "+00:00")).tzinfo == UTC
    assert second["facts"]["identity"] == {
        "subject_hash": "ab" * 16,
        "us_person": True,
        "nationalities": ["US"],
        "residence": None,
        "permanent_residence": None,
        "most_recent_country": None,
        "assurance_level": "ial2",
        "trust_framework": "nist_800_63A",
    }
    assert second["facts"]["location"]["anonymizer"]["vpn"] is True
    assert second["facts"]["location"]["subdivisions"] == ["US-CA"]
    assert third["facts"]["location"] is None and third["databases"] == []
    assert [r["seq"] for r in (first, second, third)] == [0, 1, 2]
    assert {r["chain"] for r in (first, second, third)} == {writer.chain}
    assert first["prev"] == GENESIS and second["prev"] == first["hash"] and third["prev"] == second["hash"]
    assert writer.head == (writer.chain, 3, third["hash"])
    result = verify_files([path], None, head=third["hash"])
    assert result.intact, result.problems


def test_full_ip_only_when_asked(tmp_path: Path) -> None:
    write(tmp_path / "a.log", [decision()], full_ip=True)
    assert lines(tmp_path / "a.log")[0]["facts"]["client_ip"] == "203.0.113.7"


def test_wants_follows_include(tmp_path: Path) -> None:
    denied, allowed = decision("EAR99", "CU"), decision("EAR99", "US")
    report = decide(POLICY, "TRIAL", loc("DE"))
    assert report.allowed and report.would_deny
    open_ok = decide(POLICY, "OPEN", loc("DE"))
    cases = {
        "controlled": [True, True, True, False],
        "denials": [True, False, True, False],
        "all": [True, True, True, True],
    }
    for include, expected in cases.items():
        with AuditWriter(tmp_path / f"{include}.log", include=include) as writer:  # type: ignore[arg-type]
            got = [
                writer.wants("deny", denied, True),
                writer.wants("allow", allowed, True),  # allowed on a class that restricts anyone
                writer.wants("would_deny", report, True),
                writer.wants("allow", open_ok, False),
            ]
        assert got == expected, include


def test_rejects_bad_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOFENCE_TEST_NO_KEY", raising=False)
    with pytest.raises(GeofenceError, match="GEOFENCE_TEST_NO_KEY"):
        AuditWriter(tmp_path / "a.log", key_env="GEOFENCE_TEST_NO_KEY")
    with pytest.raises(GeofenceError, match="include"):
        AuditWriter(tmp_path / "a.log", include="some")  # type: ignore[arg-type]
    with pytest.raises(GeofenceError, match="path or a logger"):
        AuditWriter(None)


def test_size_rotation_keeps_one_chain_across_real_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = write(path, [decision(country=c) for c in ["CU", "US", "DE"] * 20], max_bytes=4000)
    files = sorted(tmp_path.iterdir())
    assert len(files) >= 4 and path in files
    assert all(f.stat().st_size <= 4000 for f in files)
    records = [r for f in files for r in lines(f)]
    assert sorted(r["seq"] for r in records) == list(range(60)) and writer.written == 60
    shuffled = random.Random(1).sample(files, len(files))  # any order on the command line
    result = verify_files(shuffled, None)
    assert result.intact, result.problems
    assert result.heads[writer.chain].seq == 59 and result.heads[writer.chain].file == str(path)
    # a missing rotated file is a gap in the chain
    middle = [f for f in files if f != path][1]
    problems = verify_files([f for f in files if f != middle], None).problems
    assert problems and "missing" in problems[0].message


def test_daily_rotation_at_utc_midnight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    day1 = datetime(2026, 11, 29, 23, 59, 58, tzinfo=UTC).timestamp()
    clock = iter([day1, day1 + 1, day1 + 3, day1 + 4])
    monkeypatch.setattr(audit, "_now", lambda: next(clock))
    path = tmp_path / "audit.log"
    write(path, [decision()] * 4, daily=True, max_bytes=None)
    rotated = tmp_path / "audit.log.20261130T000001Z"
    assert sorted(p for p in tmp_path.iterdir() if p.suffix != ".lock") == [path, rotated]
    assert [r["time"][:10] for r in lines(rotated)] == ["2026-11-29"] * 2
    assert [r["time"][:10] for r in lines(path)] == ["2026-11-30"] * 2
    assert verify_files([path, rotated], None).intact


def test_a_second_writer_appends_its_own_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    first, second = write(path, [decision()] * 3), write(path, [decision()] * 2)
    assert first.chain != second.chain
    result = verify_files([path], None)
    assert result.intact and {c: h.seq for c, h in result.heads.items()} == {first.chain: 2, second.chain: 1}


def test_concurrent_submitters(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    d = decision()
    with AuditWriter(path, queue_size=100_000) as writer:

        def submitter(n: int) -> None:
            for i in range(300):
                writer.submit("deny", d, f"{n}-{i}", None)

        threads = [threading.Thread(target=submitter, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert writer.written == 2400 and writer.dropped == 0
    assert len({r["request_id"] for r in lines(path)}) == 2400
    assert verify_files([path], None).intact


class _Blocking(logging.Handler):
    """A sink that holds the writer thread until released: fills the queue for real."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.lines.append(record.getMessage())


def test_overflow_is_counted_logged_and_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    handler = _Blocking()
    sink = logging.getLogger("geofence.test.audit.blocking")
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)
    sink.propagate = False
    try:
        writer = AuditWriter(None, logger=sink.name, queue_size=1)
        d = decision()
        writer.submit("deny", d, "r0", None)
        assert handler.entered.wait(5)  # the writer thread holds r0
        writer.submit("deny", d, "r1", None)  # fills the queue
        with caplog.at_level(logging.WARNING, "geofence"):
            writer.submit("deny", d, "r2", None)
            writer.submit("deny", d, "r3", None)
        assert writer.dropped == 2 and writer.queue_depth == 1
        assert not writer.healthy  # (failing, which fails closed, needs on_failure = "deny" and a file)
        assert "audit record dropped" in caplog.text
        handler.gate.set()
        assert wait_until(lambda: writer.written == 2)
        assert writer.healthy  # a successful write clears it
        writer.close()
        assert [json.loads(line)["request_id"] for line in handler.lines] == ["r0", "r1"]
    finally:
        handler.gate.set()
        sink.removeHandler(handler)


def test_logger_sink_lines_form_a_verifiable_chain(tmp_path: Path) -> None:
    out = tmp_path / "from-logging.log"
    handler = logging.FileHandler(out)
    sink = logging.getLogger("geofence.test.audit.file")
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)
    sink.propagate = False
    try:
        with AuditWriter(None, logger=sink.name) as writer:
            for _ in range(5):
                writer.submit("deny", decision(), "r", None)
    finally:
        sink.removeHandler(handler)
        handler.close()
    assert writer.written == 5 and verify_files([out], None).intact


def test_write_errors_are_counted_and_recover(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    writer = AuditWriter(blocker / "audit.log", on_failure="deny")
    try:
        with caplog.at_level(logging.WARNING, "geofence"):
            writer.submit("deny", decision(), "lost", None)
            assert wait_until(lambda: writer.errors == 1)
        assert writer.failing and not writer.healthy and writer.written == 0
        assert "audit write failed" in caplog.text
        blocker.unlink()
        writer.submit("deny", decision(), "kept", None)
        assert wait_until(lambda: writer.written == 1)
        assert writer.healthy and not writer.failing
    finally:
        writer.close()
    (record,) = lines(blocker / "audit.log")
    assert record["request_id"] == "kept" and record["seq"] == 0  # the lost record did not advance the chain
    assert verify_files([blocker / "audit.log"], None).intact


def test_submit_after_close_is_counted(tmp_path: Path) -> None:
    writer = write(tmp_path / "a.log", [decision()])
    writer.submit("deny", decision(), "late", None)
    assert writer.dropped == 1 and writer.written == 1


# -- tampering ------------------------------------------------------------------------------------------------


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, AuditWriter]:
    path = tmp_path / "audit.log"
    return path, write(path, [decision(country=c) for c in ["CU", "US", "DE", "FR", "CU"] * 2])


def tamper(path: Path, change: Any) -> None:
    rows = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(rows)))


def problems_at(path: Path, key: bytes | None = None, head: str | None = None) -> list[tuple[int, str]]:
    result = verify_files([path], key, head)
    assert not result.intact
    assert all(p.file in (str(path), "-") for p in result.problems)
    return [(p.line, p.message) for p in result.problems]


def test_an_edited_record_is_named(chain: tuple[Path, AuditWriter]) -> None:
    path, _ = chain
    tamper(path, lambda rows: [r.replace('"CU"', '"US"') if i == 4 else r for i, r in enumerate(rows)])
    assert [(line, "edited" in msg) for line, msg in problems_at(path)] == [(5, True)]


def test_a_deleted_record_is_named(chain: tuple[Path, AuditWriter]) -> None:
    path, _ = chain
    tamper(path, lambda rows: rows[:3] + rows[4:])
    ((line, message),) = problems_at(path)
    assert line == 4 and "1 record(s) missing" in message


def test_a_deleted_first_record_is_named(chain: tuple[Path, AuditWriter]) -> None:
    path, _ = chain
    tamper(path, lambda rows: rows[1:])
    ((line, message),) = problems_at(path)
    assert line == 1 and "starts mid-way" in message


def test_an_inserted_record_is_named(chain: tuple[Path, AuditWriter]) -> None:
    """Even a forger who recomputes an unkeyed hash cannot fit a record into the chain."""
    path, _ = chain
    rows = path.read_text().splitlines(keepends=True)
    after = json.loads(rows[4])
    forged = {k: v for k, v in after.items() if k != "hash"} | {"seq": 5, "prev": after["hash"], "request_id": "x"}
    line, _ = seal(forged, None)
    tamper(path, lambda rows: [*rows[:5], line, *rows[5:]])
    found = problems_at(path)
    assert found[0][0] == 7 and "duplicated" in found[0][1]  # the real seq 5 no longer follows
    tamper(path, lambda rows: [*rows[:6], rows[2], *rows[6:]])  # a copied old record
    assert 7 in [line for line, _ in problems_at(path)]


def test_reordered_records_are_named(chain: tuple[Path, AuditWriter]) -> None:
    path, _ = chain
    tamper(path, lambda rows: [*rows[:3], rows[4], rows[3], *rows[5:]])
    found = problems_at(path)
    assert [line for line, _ in found] == [4, 5] and "out of order" in found[1][1]


def test_a_truncated_tail_needs_the_head(chain: tuple[Path, AuditWriter]) -> None:
    path, writer = chain
    head = writer.head[2]
    tamper(path, lambda rows: rows[:-2])
    assert verify_files([path], None).intact  # a shorter chain is still a chain...
    assert "not found" in problems_at(path, head=head)[0][1]  # ...but the head kept elsewhere is gone


def test_hmac_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFENCE_TEST_AUDIT_KEY", "s3cret")
    path = tmp_path / "audit.log"
    write(path, [decision()] * 4, key_env="GEOFENCE_TEST_AUDIT_KEY")
    assert {r["alg"] for r in lines(path)} == {"hmac-sha256"}
    assert verify_files([path], b"s3cret").intact
    assert "edited" in problems_at(path, b"wrong")[0][1]
    assert "--key-env" in problems_at(path)[0][1]
    # rewriting the whole log without the key is a downgrade verify refuses
    plain = tmp_path / "plain.log"
    write(plain, [decision()] * 2)
    assert "unkeyed" in problems_at(plain, b"s3cret")[0][1]
    # an edit with a recomputed unkeyed hash does not pass for keyed
    rows = path.read_text().splitlines(keepends=True)
    record = json.loads(rows[1])
    record.pop("hash")
    record["facts"]["location"]["country"] = "US"
    rows[1], _ = seal(record, None)
    path.write_text("".join(rows))
    found = problems_at(path, b"s3cret")
    assert found[0][0] == 2 and "edited" in found[0][1]
    assert [line for line, _ in found] == [2, 3]  # and the next record no longer follows it


def test_garbage_lines_are_named(chain: tuple[Path, AuditWriter]) -> None:
    path, _ = chain
    tamper(path, lambda rows: [*rows[:2], "hello\n", *rows[2:]])
    assert problems_at(path)[0][0] == 3


def test_one_writer_per_file_and_pid_paths(tmp_path: Path) -> None:
    """Several writers on one file would rotate each other's files away: a second one is refused, and
    {pid} in the path gives each worker process its own file."""
    path = tmp_path / "audit.log"
    first = AuditWriter(path)
    try:
        with pytest.raises(GeofenceError, match="already written"):
            AuditWriter(path)
    finally:
        first.close()
    AuditWriter(path).close()  # free again once the first writer closed
    per_process = AuditWriter(tmp_path / "audit-{pid}.log")
    per_process.close()
    assert per_process.path == tmp_path / f"audit-{os.getpid()}.log"


def test_a_logger_that_drops_info_is_a_failing_sink_and_deny_needs_a_file(caplog: pytest.LogCaptureFixture) -> None:
    quiet = logging.getLogger("geofence.test.audit.quiet")
    quiet.setLevel(logging.WARNING)
    writer = AuditWriter(None, logger=quiet.name)
    try:
        writer.submit("deny", decision(), "r", None)
        assert wait_until(lambda: writer.errors == 1)
        assert writer.written == 0 and not writer.healthy
    finally:
        writer.close()
    with pytest.raises(GeofenceError, match="needs a file path"):
        AuditWriter(None, logger=quiet.name, on_failure="deny")


def test_lines_that_never_reach_the_disk_are_errors_not_writes(tmp_path: Path) -> None:
    """A full disk: buffered lines that fail to flush are counted lost, and the writer stays unhealthy."""
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")  # every write to it fails with ENOSPC, at flush time
    writer = AuditWriter(path)
    try:
        for i in range(300):
            writer.submit("deny", decision(), f"r{i}", None)
        assert wait_until(lambda: writer.errors + writer.written == 300 and writer.queue_depth == 0)
        assert writer.written == 0 and writer.errors == 300 and not writer.healthy
    finally:
        writer.close()


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_a_whole_chain_deleted_between_two_others_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes | None
) -> None:
    """Every restart starts a chain; each new chain links to the file's last record, so removing the whole of
    one writer's records (a restart's worth of evidence) breaks the next chain's link."""
    if key is not None:
        monkeypatch.setenv("GEOFENCE_TEST_AUDIT_KEY", key.decode())
    options = {"key_env": "GEOFENCE_TEST_AUDIT_KEY"} if key is not None else {}
    path = tmp_path / "audit.log"
    chains = [write(path, [decision()] * 3, **options).chain for _ in range(3)]
    assert verify_files([path], key).intact
    kept = [line for line in path.read_text().splitlines(keepends=True) if json.loads(line)["chain"] != chains[1]]
    path.write_text("".join(kept))
    problems = verify_files([path], key).problems
    assert any("continues from were deleted" in p.message for p in problems), problems
