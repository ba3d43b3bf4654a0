"""The ``geofence`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import LOCATION_KEYS, MAXMIND_TESTDATA, ROOT

LOOKUP_KEYS = LOCATION_KEYS | {"ip"}


def geofence(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geofence", *args], capture_output=True, text=True, input=stdin, timeout=120, cwd=cwd
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("geofence: error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_lookup_table_on_the_bundled_database() -> None:
    result = geofence("lookup", "8.8.8.8", "10.1.2.3", "::ffff:1.1.1.1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["IP", "COUNTRY"]
    assert lines[1].split()[:2] == ["8.8.8.8", "US"]
    assert "not geolocatable: private" in lines[2]
    assert lines[3].split()[:2] == ["::ffff:1.1.1.1", "AU"]
    assert "IP geolocation by DB-IP (https://db-ip.com)" in result.stdout  # CC BY 4.0 attribution


def test_lookup_json(city_db: Path, anonymous_db: Path) -> None:
    result = geofence(
        "lookup", "91.207.57.1", "8.8.8.200", "fe80::1%eth0", "--json", "--db", str(city_db), "--db", str(anonymous_db)
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert set(row) >= LOOKUP_KEYS
    crimea, vpn, link_local = rows
    assert crimea["ip"] == "91.207.57.1"
    assert crimea["country"] == "UA" and crimea["subdivisions"] == ["UA-43"]
    assert crimea["anonymizer"] == {
        "vpn": False,
        "tor": False,
        "hosting": False,
        "public_proxy": False,
        "residential_proxy": False,
    }
    assert [db["type"] for db in crimea["databases"]] == ["GeoIP2-City", "GeoIP2-Anonymous-IP"]
    assert crimea["databases"][0]["path"] == str(city_db)
    assert vpn["anonymizer"]["vpn"] is True and vpn["network"] == "8.8.8.128/25"
    assert link_local["geolocatable"] is False and link_local["reason"] == "link_local"
    assert link_local["address"] == "fe80::1"


def test_lookup_reads_stdin() -> None:
    result = geofence("lookup", "--json", "-", stdin="8.8.8.8\n1.1.1.1  2a00:1450:4001:81b::200e\n")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["ip"] for line in result.stdout.splitlines()] == [
        "8.8.8.8",
        "1.1.1.1",
        "2a00:1450:4001:81b::200e",
    ]


@pytest.mark.parametrize("bad", ["999.1.1.1", "8.8.8", "not-an-ip", "[::1]:80", "1.2.3.4/24"])
def test_lookup_bad_address(bad: str) -> None:
    assert_one_line_error(geofence("lookup", "8.8.8.8", bad), repr(bad), "not a valid IP address")


def test_lookup_reports_every_bad_address() -> None:
    assert_one_line_error(geofence("lookup", "x", "8.8.8.8", "y"), "'x'", "'y'")


def test_lookup_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "GeoIP2-City.mmdb"
    assert_one_line_error(geofence("lookup", "8.8.8.8", "--db", str(missing)), "no such database file")


def test_lookup_corrupt_database(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00" * 5000)
    assert_one_line_error(geofence("lookup", "8.8.8.8", "--db", str(corrupt)), "not a readable MaxMind DB")


def test_lookup_unknown_schema(write_db) -> None:  # type: ignore[no-untyped-def]
    path = write_db("asn.mmdb", "GeoLite2-ASN", {"8.8.8.0/24": {"autonomous_system_number": 15169}})
    assert_one_line_error(geofence("lookup", "8.8.8.8", "--db", str(path)), "unsupported database type")


@pytest.mark.skipif(not MAXMIND_TESTDATA.is_dir(), reason="MaxMind test data not available")
def test_lookup_corrupt_record_is_a_clean_error() -> None:
    path = MAXMIND_TESTDATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    assert_one_line_error(geofence("lookup", "81.2.69.160", "--db", str(path)), "corrupt data")


def test_db_info_json(country_db: Path) -> None:
    result = geofence("db", "info", str(country_db), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["type"] == "GeoIP2-Country"
    assert info["schema"] == "geoip2"
    assert info["ip_version"] == 6
    assert info["record_size"] in (24, 28, 32)
    assert info["node_count"] > 0
    assert info["age_days"] == 0  # written just now
    assert len(info["build_date"]) == 10


def test_db_info_bundled_text() -> None:
    result = geofence("db", "info")
    assert result.returncode == 0, result.stderr
    assert "country ipvAll" in result.stdout
    assert "age days" in result.stdout and "node count" in result.stdout
    assert "DB-IP" in result.stdout


@pytest.mark.skipif(not MAXMIND_TESTDATA.is_dir(), reason="MaxMind test data not available")
def test_db_info_verify_finds_corruption_the_open_check_cannot() -> None:
    path = str(MAXMIND_TESTDATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    assert geofence("db", "info", path).returncode == 0
    assert_one_line_error(geofence("db", "info", path, "--verify"), "corrupt after")


def test_db_info_verify_counts_networks(country_db: Path) -> None:
    result = geofence("db", "info", str(country_db), "--verify", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified_networks"] >= 7


def test_db_info_missing(tmp_path: Path) -> None:
    assert_one_line_error(geofence("db", "info", str(tmp_path / "x.mmdb")), "no such database file")


def test_usage_errors_exit_2() -> None:
    assert geofence().returncode == 2
    assert geofence("lookup").returncode == 2
    assert geofence("frobnicate").returncode == 2


def test_version() -> None:
    result = geofence("--version")
    assert result.returncode == 0 and result.stdout.startswith("geofence ")


def test_wheel_ships_the_database_and_works_from_any_directory(tmp_path: Path) -> None:
    """`pip install .` must give a working `geofence lookup` anywhere: the database travels in the wheel."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 and "hatchling" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("cannot fetch the build backend (offline)")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("geofence-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "geofence/data/dbip-country-lite.mmdb" in names
    assert "geofence/data/README.md" in names and "geofence/py.typed" in names
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from geofence.cli.main import main; sys.exit(main(['lookup', '--json', '8.8.8.8']))",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["country"] == "US"
    assert row["databases"][0]["path"].startswith(str(target))


def test_lookup_empty_stdin_is_an_error() -> None:
    assert_one_line_error(geofence("lookup", "-", stdin=""), "no addresses given")


def test_lookup_zone_id_cannot_inject_output() -> None:
    assert_one_line_error(geofence("lookup", "2a00:1450::1%x\nFAKE  US"), "not a valid IP address")


def test_lookup_from_stdin_reports_bad_lines_and_answers_the_others() -> None:
    stdin = "# addresses to check\n8.8.8.8\n\nnot-an-ip\n1.1.1.1  # a comment\n999.1.1.1 2a00:1450:4001:81b::200e\n"
    result = geofence("lookup", "--json", "-", stdin=stdin)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [json.loads(line)["ip"] for line in result.stdout.splitlines()] == [
        "8.8.8.8", "1.1.1.1", "2a00:1450:4001:81b::200e"
    ]  # fmt: skip
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("geofence: line 4: ") and "'not-an-ip'" in lines[0]
    assert lines[1].startswith("geofence: line 6: ") and "'999.1.1.1'" in lines[1]
    clean = geofence("lookup", "-", stdin="# only good ones\n8.8.8.8\n\n")
    assert clean.returncode == 0 and "8.8.8.8" in clean.stdout and clean.stderr == ""


@pytest.mark.parametrize("group", ["db", "policy"])
def test_a_command_group_alone_prints_its_own_help(group: str) -> None:
    result = geofence(group)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"usage: geofence {group}" in result.stderr and f"{group} commands" in result.stderr


def test_check_refuses_a_relative_path() -> None:
    assert_one_line_error(geofence("check", "--ip", "8.8.8.8", "--path", "v1/models"), "must start with '/'")


def test_token_key_problems_are_one_line_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir" / "key.pem"
    assert_one_line_error(geofence("token", "--key", str(missing_dir), "--nationality", "US"), "no such directory")
    assert not missing_dir.parent.exists()  # never a silent mkdir -p
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    assert_one_line_error(geofence("token", "--key", str(garbage), "--nationality", "US"), "not an unencrypted PEM")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert_one_line_error(geofence("token", "--key", str(rsa_key), "--nationality", "US"), "EC P-256")
    fresh = tmp_path / "new.pem"  # a file in an existing folder is created, as before
    assert geofence("token", "--key", str(fresh), "--nationality", "US").returncode == 0 and fresh.exists()


def test_demo_refuses_a_bad_or_busy_port_before_serving() -> None:
    result = geofence("demo", "--port", "99999")
    assert result.returncode == 2 and "not a port" in result.stderr and "Traceback" not in result.stderr
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = geofence("demo", "--port", str(port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_db_verify_shows_progress_on_a_terminal_only() -> None:
    """A long walk shows its count on a terminal (then clears it); a pipe or a log gets only the result."""
    import pty

    main, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "geofence", "db", "info", "--verify"],
            stdout=subprocess.PIPE, stderr=secondary, timeout=300, text=True,
        )  # fmt: skip
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
    assert result.returncode == 0 and "verified" in result.stdout.lower()
    assert b"verifying" in seen and b"networks" in seen and b"\r\x1b[K" in seen
    piped = geofence("db", "info", "--verify")
    assert piped.returncode == 0 and "verifying" not in piped.stderr
