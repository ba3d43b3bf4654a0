"""``geofence audit verify|summary|replay``, run as a real subprocess on real audit files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geofence.cli.audit import replay
from geofence.evidence.audit import AuditWriter
from geofence.geoip.location import DatabaseInfo, Location
from geofence.identity.claims import Identity
from geofence.policy.decision import decide
from geofence.policy.load import Policy, load_policy

from .conftest import ROOT

OLD = """
[defaults]
class = "EAR99"
[classes.EAR99]
deny_destinations = ["CU"]
[classes.CTRL]
allow_destinations = ["US", "DE"]
persons = "us_only"
"""
NEW = """
[defaults]
class = "EAR99"
[classes.EAR99]
deny_destinations = ["CU", "IR"]
[classes.CTRL]
allow_destinations = ["US"]
"""
DB = DatabaseInfo("/data/city.mmdb", "GeoIP2-City", 1_700_000_000, "geoip2")
US_PERSON = Identity(True, ("US",), subject_hash="cd" * 16)


def geofence(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geofence", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def loc(country: str) -> Location:
    return Location("198.51.100.0/24", country, databases=(DB,))


@pytest.fixture
def policies(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "old.toml").write_text(OLD)
    (tmp_path / "new.toml").write_text(NEW)
    return tmp_path / "old.toml", tmp_path / "new.toml"


def record_traffic(path: Path, policy: Policy, **kw: object) -> AuditWriter:
    traffic = [
        ("CTRL", "DE", US_PERSON),  # allowed -> newly denied (DE leaves the list)
        ("CTRL", "US", US_PERSON),  # allowed either way
        ("CTRL", "US", None),  # identity_required -> newly allowed (persons = "any")
        ("EAR99", "IR", None),  # allowed -> newly denied (IR added)
        ("EAR99", "CU", None),  # denied either way
        ("EAR99", "FR", None),
    ]
    with AuditWriter(path, include="all", **kw) as writer:  # type: ignore[arg-type]
        for i, (cls, country, identity) in enumerate(traffic):
            d = decide(policy, cls, loc(country), identity)
            writer.submit("allow" if d.allowed else "deny", d, f"req-{i}", None)
    return writer


def test_replay_reports_what_a_new_policy_changes(tmp_path: Path, policies: tuple[Path, Path]) -> None:
    old, new = policies
    log = tmp_path / "audit.log"
    record_traffic(log, load_policy(old))
    result = geofence("audit", "replay", str(log), "--config", str(new), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["replayed"] == 6 and report["skipped"] == 0
    assert report["newly_denied"] == 2 and report["newly_allowed"] == 1
    assert report["newly_denied_by"] == {
        "class": {"CTRL": 1, "EAR99": 1},
        "reason": {"destination_not_allowed": 1, "destination_denied": 1},
        "country": {"DE": 1, "IR": 1},
    }
    assert report["newly_allowed_by"] == {
        "class": {"CTRL": 1},
        "reason": {"identity_required": 1},
        "country": {"US": 1},
    }
    # the same policy changes nothing
    same = replay([str(log)], load_policy(old))
    assert same["newly_denied"] == same["newly_allowed"] == 0 and same["replayed"] == 6
    text = geofence("audit", "replay", str(log), "--config", str(new))
    assert text.returncode == 0 and "newly denied: 2" in text.stdout and "newly allowed: 1" in text.stdout


def test_replay_rejects_a_bad_policy(tmp_path: Path, policies: tuple[Path, Path]) -> None:
    log = tmp_path / "audit.log"
    record_traffic(log, load_policy(policies[0]))
    (tmp_path / "bad.toml").write_text("[classes.X]\nmode = 'sometimes'\n")
    result = geofence("audit", "replay", str(log), "--config", str(tmp_path / "bad.toml"))
    assert result.returncode == 2 and result.stderr.startswith("geofence: error: ")


def test_verify_intact_and_tampered(tmp_path: Path, policies: tuple[Path, Path]) -> None:
    log = tmp_path / "audit.log"
    writer = record_traffic(log, load_policy(policies[0]))
    head = writer.head[2]
    ok = geofence("audit", "verify", str(log), "--head", head)
    assert ok.returncode == 0, ok.stderr
    assert "6 records" in ok.stdout and head in ok.stdout

    rows = log.read_text().splitlines(keepends=True)
    log.write_text("".join([rows[0], rows[2], rows[1], *rows[3:5]]))  # reordered, tail cut
    bad = geofence("audit", "verify", str(log), "--head", head)
    assert bad.returncode == 1
    assert f"{log}:2: " in bad.stderr and f"{log}:3: " in bad.stderr and "out of order" in bad.stderr
    assert "not found" in bad.stderr and "NOT intact" in bad.stderr
    assert geofence("audit", "verify", str(tmp_path / "missing.log")).returncode == 2


def test_verify_keyed_chain_across_rotated_files(
    tmp_path: Path, policies: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"GEOFENCE_TEST_CLI_AUDIT_KEY": "k3y"}
    monkeypatch.setenv("GEOFENCE_TEST_CLI_AUDIT_KEY", "k3y")
    policy = load_policy(policies[0])
    record_traffic(tmp_path / "audit.log", policy, key_env="GEOFENCE_TEST_CLI_AUDIT_KEY", max_bytes=2000)
    monkeypatch.delenv("GEOFENCE_TEST_CLI_AUDIT_KEY")  # the writer read it once, at construction
    files = sorted(str(p) for p in tmp_path.glob("audit.log*"))
    assert len(files) >= 2
    ok = geofence("audit", "verify", *files, "--key-env", "GEOFENCE_TEST_CLI_AUDIT_KEY", env=env)
    assert ok.returncode == 0, ok.stderr
    unkeyed = geofence("audit", "verify", *files)
    assert unkeyed.returncode == 1 and "--key-env" in unkeyed.stderr
    wrong = geofence(
        "audit",
        "verify",
        *files,
        "--key-env",
        "GEOFENCE_TEST_CLI_AUDIT_KEY",
        env={"GEOFENCE_TEST_CLI_AUDIT_KEY": "other"},
    )
    assert wrong.returncode == 1 and "edited" in wrong.stderr
    unset = geofence("audit", "verify", *files, "--key-env", "GEOFENCE_TEST_CLI_AUDIT_UNSET")
    assert unset.returncode == 2 and "GEOFENCE_TEST_CLI_AUDIT_UNSET" in unset.stderr


def test_summary(tmp_path: Path, policies: tuple[Path, Path]) -> None:
    log = tmp_path / "audit.log"
    record_traffic(log, load_policy(policies[0]))
    result = geofence("audit", "summary", str(log), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["records"] == 6
    assert report["by_outcome"] == {"allow": 4, "deny": 2}
    assert report["by_class"] == {"CTRL": 3, "EAR99": 3}
    assert report["by_reason"] == {"identity_required": 1, "destination_denied": 1}
    assert report["by_country"] == {"US": 2, "DE": 1, "IR": 1, "CU": 1, "FR": 1}
    assert sum(report["by_hour"].values()) == 6 and all(h.endswith(":00Z") for h in report["by_hour"])
    text = geofence("audit", "summary", str(log))
    assert text.returncode == 0 and "by reason:" in text.stdout and "destination_denied" in text.stdout


def test_summary_chart_is_a_readable_svg(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    from geofence.evidence.audit import AuditWriter
    from geofence.geoip.location import Location
    from geofence.policy.decision import Decision, Reason

    trail = tmp_path / "audit.jsonl"
    with AuditWriter(trail) as writer:
        for country, allowed in (("US", True), ("RU", False), ("US", True)):
            reasons = () if allowed else (Reason("destination_denied", "destination RU is denied"),)
            location = Location(network="198.18.0.0/15", country=country)
            decision = Decision(allowed, 200 if allowed else 451, "EAR99", "enforce", reasons, "v1", location, None)
            writer.submit("allow" if allowed else "deny", decision, "r", None)
    chart = tmp_path / "chart.svg"
    result = subprocess.run(
        [sys.executable, "-m", "geofence", "audit", "summary", str(trail), "--chart", str(chart)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    root = ElementTree.parse(chart).getroot()  # well-formed XML
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "3 audited decisions by hour (UTC)" in texts and "destination_denied" in texts and "RU" in texts
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") in ("#2e7d32", "#c62828")]
    assert len(bars) >= 2
    bad = subprocess.run(
        [sys.executable, "-m", "geofence", "audit", "summary", str(trail), "--chart", str(tmp_path / "c.png")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2 and "name it .svg" in bad.stderr
