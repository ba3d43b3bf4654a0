"""``geofence db update`` against a real HTTP server speaking geoipupdate's protocol, with real archives."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import mmdb_writer
import pytest

from geofence.cli.main import main
from geofence.geoip.update.conf import ConfigError, load_config

from .conftest import ROOT, country, write_mmdb

ACCOUNT, KEY = "123456", "s3cret-licence"
COUNTRY = "GeoLite2-Country"
DAY = 86400
NOW = int(time.time()) // DAY * DAY
NETWORKS = {
    "8.8.8.0/24": {"country": country("US")},
    "81.2.69.0/24": {"country": country("GB")},
    "2a02:ff0::/32": {"country": country("DE")},
}


def build(path: Path, epoch: int, database_type: str = COUNTRY, networks: Any = None) -> Path:
    """A real .mmdb with a chosen build date (mmdb-writer stamps time.time())."""
    path.parent.mkdir(parents=True, exist_ok=True)
    real = mmdb_writer.time.time
    mmdb_writer.time.time = lambda: float(epoch)
    try:
        return write_mmdb(path, database_type, networks or NETWORKS)
    finally:
        mmdb_writer.time.time = real


def archive(mmdb: bytes, edition: str) -> bytes:
    """A tar.gz laid out like MaxMind's: a dated folder with licence files and the database."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("LICENSE.txt", b"licence"), (f"{edition}.mmdb", mmdb)):
            info = tarfile.TarInfo(f"{edition}_20261127/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Service:
    """What the fake update service serves, and the log of what it was asked."""

    def __init__(self) -> None:
        self.editions: dict[str, tuple[str, bytes]] = {}  # edition -> (md5, archive)
        self.files: dict[str, bytes] = {}  # plain downloads under /files/
        self.redirect = False  # like MaxMind: the download redirects to storage
        self.file_auth: list[str | None] = []
        self.log: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.truncate = False
        self.url = ""
        self.released = threading.Event()

    def publish(self, edition: str, mmdb: Path, md5: str | None = None, body: bytes | None = None) -> str:
        data = mmdb.read_bytes()
        digest = md5 or hashlib.md5(data).hexdigest()
        self.editions[edition] = (digest, archive(data, edition) if body is None else body)
        return digest


def _handler(service: Service) -> type[BaseHTTPRequestHandler]:
    good = "Basic " + base64.b64encode(f"{ACCOUNT}:{KEY}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            service.log.append(self.path)
            if service.delay:
                service.released.wait(service.delay)
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path.startswith("/files/"):  # plain downloads: no credentials
                service.file_auth.append(self.headers.get("Authorization"))
                found = service.files.get(url.path[7:])
                return self.reply(404, b"") if found is None else self.reply(200, found)
            if self.headers.get("Authorization") != good:
                return self.reply(401, b'{"code":"AUTHORIZATION_INVALID"}')
            if service.status != 200:
                return self.reply(service.status, b"oops")
            if url.path == "/geoip/updates/metadata" and query.get("edition_id") in service.editions:
                md5 = service.editions[query["edition_id"]][0]
                entry = {"edition_id": query["edition_id"], "date": "2026-11-27", "md5": md5}
                return self.reply(200, json.dumps({"databases": [entry]}).encode())
            parts = url.path.split("/")
            if url.path.endswith("/download") and parts[3] in service.editions and query.get("date") == "20261127":
                body = service.editions[parts[3]][1]
                if service.redirect:
                    service.files[parts[3]] = body
                    self.send_response(302)
                    self.send_header("Location", f"/files/{parts[3]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if service.truncate:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return None
                return self.reply(200, body)
            return self.reply(404, b'{"code":"NOT_FOUND"}')

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def service() -> Iterator[Service]:
    state = Service()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def dbdir(tmp_path: Path) -> Path:
    path = tmp_path / "GeoIP"
    path.mkdir()
    return path


def conf(tmp_path: Path, service: Service, dbdir: Path, editions: str = COUNTRY, **extra: str) -> str:
    lines = [f"AccountID {ACCOUNT}", f"LicenseKey {KEY}", f"EditionIDs {editions}", f"DatabaseDirectory {dbdir}"]
    lines += [f"Host {service.url}"] + [f"{key} {value}" for key, value in extra.items()]
    path = tmp_path / "GeoIP.conf"
    path.write_text("# test\n" + "\n".join(lines) + "\n")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["db", "update", "--json", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def leftovers(dbdir: Path) -> list[str]:
    return sorted(p.name for p in dbdir.iterdir() if p.name.endswith(".tmp"))


def test_installs_a_new_edition(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    md5 = service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    code, rows, err = run(capsys, "--config", conf(tmp_path, service, dbdir))
    assert code == 0, err
    target = dbdir / f"{COUNTRY}.mmdb"
    assert rows == [
        {
            "edition": COUNTRY,
            "status": "updated",
            "path": str(target),
            "md5": md5,
            "build_date": time.strftime("%Y-%m-%d", time.gmtime(NOW)),
            "error": None,
        }
    ]
    assert hashlib.md5(target.read_bytes()).hexdigest() == md5
    assert target.stat().st_mode & 0o777 == 0o644  # readable by the service, unlike a raw temporary file
    assert service.log == [
        f"/geoip/updates/metadata?edition_id={COUNTRY}",
        f"/geoip/databases/{COUNTRY}/download?date=20261127&suffix=tar.gz",
    ]
    assert leftovers(dbdir) == [] and not (dbdir / f"{COUNTRY}.mmdb.previous").exists()
    assert err == ""  # stderr is not a terminal: no progress indicator


def test_redirect_does_not_carry_the_licence_key(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    service.redirect = True
    code, rows, err = run(capsys, "--config", conf(tmp_path, service, dbdir))
    assert code == 0 and rows[0]["status"] == "updated", err
    assert service.log[-1] == f"/files/{COUNTRY}" and service.file_auth == [None]


def test_replaces_and_keeps_the_previous_file(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    old = build(dbdir / f"{COUNTRY}.mmdb", NOW - 7 * DAY).read_bytes()
    new = build(tmp_path / "new.mmdb", NOW).read_bytes()
    service.publish(COUNTRY, tmp_path / "new.mmdb")
    assert main(["db", "update", "--config", conf(tmp_path, service, dbdir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{COUNTRY}: updated (")
    assert (dbdir / f"{COUNTRY}.mmdb").read_bytes() == new
    assert (dbdir / f"{COUNTRY}.mmdb.previous").read_bytes() == old
    assert leftovers(dbdir) == []


def test_unchanged_database_is_not_downloaded(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    md5 = service.publish(COUNTRY, build(dbdir / f"{COUNTRY}.mmdb", NOW))
    code, rows, _ = run(capsys, "--config", conf(tmp_path, service, dbdir))
    assert code == 0
    assert rows[0]["status"] == "unchanged" and rows[0]["md5"] == md5 and rows[0]["build_date"]
    assert service.log == [f"/geoip/updates/metadata?edition_id={COUNTRY}"]  # no download request


def failed(capsys: Any, config: str, *fragments: str, args: tuple[str, ...] = ()) -> dict[str, Any]:
    code, rows, err = run(capsys, "--config", config, *args)
    assert code == 1
    assert err.startswith("geofence: error: 1 of 1 editions failed: ") and err.count("\n") == 1, err
    assert rows[0]["status"] == "failed" and rows[0]["md5"] is None
    for fragment in fragments:
        assert fragment in rows[0]["error"] and fragment in err
    return rows[0]


@pytest.fixture
def current(dbdir: Path) -> bytes:
    """An installed database that a failed update must leave untouched."""
    return build(dbdir / f"{COUNTRY}.mmdb", NOW - DAY).read_bytes()


def assert_untouched(dbdir: Path, current: bytes) -> None:
    assert (dbdir / f"{COUNTRY}.mmdb").read_bytes() == current
    assert leftovers(dbdir) == [] and not (dbdir / f"{COUNTRY}.mmdb.previous").exists()


def test_corrupt_archive(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW), body=b"\x1f\x8b not really gzip" * 50)
    failed(capsys, conf(tmp_path, service, dbdir), "corrupt or truncated archive")
    assert_untouched(dbdir, current)


def test_archive_without_a_database(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW), body=_readme_only())
    failed(capsys, conf(tmp_path, service, dbdir), "holds no .mmdb file")
    assert_untouched(dbdir, current)


def _readme_only() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("x/README.txt")
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


def test_wrong_checksum(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW), md5="0123456789abcdef0123456789abcdef")
    failed(capsys, conf(tmp_path, service, dbdir), "checksum mismatch")
    assert_untouched(dbdir, current)


def test_truncated_download(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    service.truncate = True
    failed(capsys, conf(tmp_path, service, dbdir), "truncated")
    assert_untouched(dbdir, current)


def test_server_error(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    service.status = 500
    failed(capsys, conf(tmp_path, service, dbdir), "HTTP 500")
    assert_untouched(dbdir, current)


def test_slow_server_times_out(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    service.delay = 10.0
    started = time.monotonic()
    failed(capsys, conf(tmp_path, service, dbdir), "timed out", args=("--timeout", "0.3"))
    assert time.monotonic() - started < 5
    assert_untouched(dbdir, current)


def test_older_database_needs_force(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    older = build(tmp_path / "older.mmdb", NOW - 30 * DAY)
    service.publish(COUNTRY, older)
    config = conf(tmp_path, service, dbdir)
    failed(capsys, config, "older than the current one", "--force")
    assert_untouched(dbdir, current)
    code, rows, _ = run(capsys, "--config", config, "--force")
    assert code == 0 and rows[0]["status"] == "updated"
    assert (dbdir / f"{COUNTRY}.mmdb").read_bytes() == older.read_bytes()
    assert (dbdir / f"{COUNTRY}.mmdb.previous").read_bytes() == current


def test_a_database_from_the_future_is_refused(
    tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any
) -> None:
    """Accepted, a build date in 2046 would make every later (real) update "older" and freshness meaningless."""
    service.publish(COUNTRY, build(tmp_path / "future.mmdb", NOW + 20 * 365 * DAY))
    failed(capsys, conf(tmp_path, service, dbdir), "build date in the future")
    assert_untouched(dbdir, current)


def test_credentials_never_appear_in_messages(tmp_path: Path, capsys: Any) -> None:
    from geofence.cli.main import main

    code = main(["db", "update", "--url", "http://example.com/db.mmdb?license_key=S3CRET", "--output", "x.mmdb"])
    err = capsys.readouterr().err
    assert code == 2 and "S3CRET" not in err and "example.com/db.mmdb?..." in err
    code = main(["db", "update", "--url", "https://user:pw123@127.0.0.1:1/db.mmdb", "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "pw123" not in err and "user" not in err


def test_other_database_type_is_refused(
    tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any
) -> None:
    service.publish(COUNTRY, build(tmp_path / "city.mmdb", NOW, "GeoLite2-City"))
    failed(capsys, conf(tmp_path, service, dbdir), "'GeoLite2-City', the current one 'GeoLite2-Country'")
    assert_untouched(dbdir, current)


def test_unusable_database_is_refused(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    asn = build(tmp_path / "asn.mmdb", NOW, "GeoLite2-ASN", {"8.8.8.0/24": {"autonomous_system_number": 15169}})
    service.publish(COUNTRY, asn)
    failed(capsys, conf(tmp_path, service, dbdir), "downloaded database is unusable", "unsupported database type")
    assert list(dbdir.iterdir()) == [dbdir / ".geoipupdate.lock"]


def test_wrong_credentials(tmp_path: Path, service: Service, dbdir: Path, current: bytes, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    config = conf(tmp_path, service, dbdir)
    Path(config).write_text(Path(config).read_text().replace(f"LicenseKey {KEY}", "LicenseKey wrong"))
    row = failed(capsys, config, "wrong account ID or licence key (HTTP 401")
    assert "wrong" not in row["error"].replace("wrong account", "")  # the key itself is never echoed
    assert_untouched(dbdir, current)


def test_environment_and_secret_files_override_the_file(
    tmp_path: Path, service: Service, dbdir: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.publish("GeoIP2-Country", build(tmp_path / "new.mmdb", NOW, "GeoIP2-Country"))
    config = tmp_path / "GeoIP.conf"
    config.write_text("AccountID 1\nLicenseKey nope\nEditionIDs GeoLite2-City\nHost updates.maxmind.com\n")
    (tmp_path / "account").write_text(f"{ACCOUNT}\n")
    (tmp_path / "key").write_text(f"  {KEY}\n")
    monkeypatch.setenv("GEOIPUPDATE_ACCOUNT_ID", "999")
    monkeypatch.setenv("GEOIPUPDATE_ACCOUNT_ID_FILE", str(tmp_path / "account"))
    monkeypatch.setenv("GEOIPUPDATE_LICENSE_KEY", "also-wrong")
    monkeypatch.setenv("GEOIPUPDATE_LICENSE_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("GEOIPUPDATE_EDITION_IDS", "GeoIP2-Country")
    monkeypatch.setenv("GEOIPUPDATE_DB_DIR", str(dbdir))
    monkeypatch.setenv("GEOIPUPDATE_HOST", service.url)
    monkeypatch.setenv("GEOIPUPDATE_LOCK_FILE", str(tmp_path / "my.lock"))
    code, rows, err = run(capsys, "--config", str(config))
    assert code == 0, err
    assert rows[0]["edition"] == "GeoIP2-Country" and rows[0]["path"] == str(dbdir / "GeoIP2-Country.mmdb")
    assert (tmp_path / "my.lock").exists() and not (dbdir / ".geoipupdate.lock").exists()
    other = tmp_path / "other"
    code, rows, _ = run(capsys, "--config", str(config), "--dir", str(other))  # --dir beats the environment
    assert code == 0 and rows[0]["path"] == str(other / "GeoIP2-Country.mmdb")


def test_lock_held_by_another_updater(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    with open(dbdir / ".geoipupdate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, rows, err = run(capsys, "--config", conf(tmp_path, service, dbdir))
    assert code == 1 and rows == []
    assert err.startswith("geofence: error: another update is running") and err.count("\n") == 1
    assert service.log == []
    code, rows, _ = run(capsys, "--config", conf(tmp_path, service, dbdir))  # released: works again
    assert code == 0 and rows[0]["status"] == "updated"


def test_json_reports_every_edition(tmp_path: Path, service: Service, dbdir: Path, capsys: Any) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    code, rows, err = run(capsys, "--config", conf(tmp_path, service, dbdir, editions=f"GeoIP2-Nope {COUNTRY}"))
    assert code == 1
    assert [(r["edition"], r["status"]) for r in rows] == [("GeoIP2-Nope", "failed"), (COUNTRY, "updated")]
    assert all(set(r) == {"edition", "status", "path", "md5", "build_date", "error"} for r in rows)
    assert "HTTP 404" in rows[0]["error"] and rows[1]["error"] is None
    assert err == "geofence: error: 1 of 2 editions failed: GeoIP2-Nope: " + rows[0]["error"] + "\n"


def test_real_command_line(tmp_path: Path, service: Service, dbdir: Path) -> None:
    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    command = [sys.executable, "-m", "geofence", "db", "update", "--json", "--config", conf(tmp_path, service, dbdir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOIPUPDATE_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "updated"


def test_urllib_is_imported_lazily() -> None:
    """The middleware never downloads: its processes should not pay for (or expose) urllib through these modules."""
    import ast

    for module in ("geoip/update/updater", "cli/update", "geoip/update/conf"):
        tree = ast.parse((ROOT / "geofence" / f"{module}.py").read_text())
        names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert not [name for name in names if name.startswith(("urllib", "http"))], module


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AccountID 1\nLicenseKey k\n", "`EditionIDs' option is required"),
        ("LicenseKey k\nEditionIDs A\n", "`AccountID' option is required"),
        ("AccountID 1\nEditionIDs A\n", "`LicenseKey' option is required"),
        ("AccountID one\nLicenseKey k\nEditionIDs A\n", "invalid account ID format"),
        ("AccountID 1\nLicenseKey k\nEditionIDs ../../etc/x\n", "is not a MaxMind edition ID"),
        ("AccountID 1\nLicenseKey k\nEditionIDs A\nHost http://example.com\n", "plain http"),
        ("AccountID 1\nLicenseKey k\nEditionIDs A\nHost ftp://example.com\n", "not a host name"),
        ("AccountID 1\nUserId 2\nLicenseKey k\nEditionIDs A\n", "multiple times"),
        ("AccountID 1\nLicenseKey k\nEditionIDs A\nColour blue\n", "unknown option on line 4"),
        ("AccountID\n", "invalid format on line 1"),
        ("AccountID 1\nLicenseKey k\nEditionIDs A\nProxy p:1\n", "set https_proxy instead"),
        ("AccountID 999999\nLicenseKey 000000000000\nEditionIDs A\n", "real AccountID and LicenseKey"),
    ],
)
def test_bad_configuration_is_one_line_exit_2(tmp_path: Path, capsys: Any, text: str, message: str) -> None:
    path = tmp_path / "GeoIP.conf"
    path.write_text(text)
    assert main(["db", "update", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert captured.err.startswith("geofence: error: ")


def test_missing_config_and_bad_timeout(tmp_path: Path, capsys: Any) -> None:
    assert main(["db", "update", "--config", str(tmp_path / "none.conf")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["db", "update", "--config", "/dev/null", "--timeout", "0"]) == 2
    assert "--timeout must be a positive" in capsys.readouterr().err


def test_config_compatible_with_geoipupdate(tmp_path: Path) -> None:
    path = tmp_path / "GeoIP.conf"
    path.write_text(
        "# geoipupdate's sample\nUserId 42\nLicenseKey abc\nProductIds GeoLite2-ASN GeoLite2-City\n"
        "Host updates.example.com\nPreserveFileTimes 1\nRetryFor 5m\nParallelism 2\n"
    )
    config = load_config(path, env={"GEOIPUPDATE_LICENSE_KEY_FILE": ""})
    assert (config.account_id, config.license_key) == (42, "abc")
    assert config.edition_ids == ("GeoLite2-ASN", "GeoLite2-City")
    assert config.url == "https://updates.example.com"
    assert config.lock_path == config.database_directory / ".geoipupdate.lock"
    assert load_config(path, env={"GEOIPUPDATE_HOST": "http://[::1]:8080/"}).url == "http://[::1]:8080"
    with pytest.raises(ConfigError, match="set https_proxy instead"):
        load_config(path, env={"GEOIPUPDATE_PROXY": "proxy:3128"})
    with pytest.raises(ConfigError, match="failed to open GEOIPUPDATE_LICENSE_KEY_FILE"):
        load_config(path, env={"GEOIPUPDATE_LICENSE_KEY_FILE": str(tmp_path / "missing")})


def test_progress_is_reported(tmp_path: Path, service: Service, dbdir: Path) -> None:
    from geofence.cli.update import _Progress
    from geofence.geoip.update.updater import update_databases

    service.publish(COUNTRY, build(tmp_path / "new.mmdb", NOW))
    calls: list[tuple[str, int, int | None]] = []
    config = load_config(conf(tmp_path, service, dbdir), env={})
    update_databases(config, progress=lambda *call: calls.append(call))
    size = len(service.editions[COUNTRY][1])
    assert calls and calls[-1] == (COUNTRY, size, size)
    out = io.StringIO()
    progress = _Progress(out)
    progress(COUNTRY, 1_500_000, 3_000_000)
    progress.clear()
    assert out.getvalue() == f"\r{COUNTRY}: 1.5 MB of 3.0 MB\x1b[K\r\x1b[K"


def gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


@pytest.mark.parametrize(
    ("name", "pack"),
    [("db.mmdb", lambda d: d), ("db.mmdb.gz", gz), ("db.tar.gz", lambda d: archive(d, "dbip-country-lite"))],
)
def test_plain_url_source(tmp_path: Path, service: Service, capsys: Any, name: str, pack: Any) -> None:
    current = build(tmp_path / "out" / "dbip.mmdb", NOW - DAY, "DBIP-Country-Lite")
    new = build(tmp_path / "new.mmdb", NOW, "DBIP-Country-Lite").read_bytes()
    service.files[name] = pack(new)
    url = f"{service.url}/files/{name}"
    code, rows, err = run(capsys, "--url", url, "--output", str(current))
    assert code == 0, err
    assert rows == [
        {
            "edition": "dbip",
            "status": "updated",
            "path": str(current),
            "md5": hashlib.md5(new).hexdigest(),
            "build_date": time.strftime("%Y-%m-%d", time.gmtime(NOW)),
            "error": None,
        }
    ]
    assert current.read_bytes() == new and (current.parent / "dbip.mmdb.previous").exists()
    code, rows, _ = run(capsys, "--url", url, "--output", str(current))  # same file again: nothing to install
    assert code == 0 and rows[0]["status"] == "unchanged" and len(service.log) == 2
    sha = hashlib.sha256(service.files[name]).hexdigest()
    code, rows, _ = run(capsys, "--url", url, "--output", str(current), "--sha256", sha.upper())
    assert code == 0 and rows[0]["status"] == "unchanged"
    assert len(service.log) == (2 if name == "db.mmdb" else 3)  # the installed file is the download: not fetched
    assert leftovers(current.parent) == []


def test_plain_url_checksum_and_validation(tmp_path: Path, service: Service, capsys: Any) -> None:
    current = build(tmp_path / "out" / "dbip.mmdb", NOW, "DBIP-Country-Lite")
    service.files["old.mmdb"] = build(tmp_path / "old.mmdb", NOW - DAY, "DBIP-Country-Lite").read_bytes()
    url = f"{service.url}/files/old.mmdb"
    code, rows, err = run(capsys, "--url", url, "--output", str(current), "--sha256", "ab" * 32)
    assert code == 1 and "checksum mismatch (SHA-256" in rows[0]["error"] and err.count("\n") == 1
    code, rows, err = run(capsys, "--url", url, "--output", str(current))
    assert code == 1 and "older than the current one" in rows[0]["error"]
    code, rows, err = run(capsys, "--url", f"{service.url}/files/missing.mmdb", "--output", str(current))
    assert code == 1 and "HTTP 404" in rows[0]["error"]
    assert leftovers(current.parent) == [] and not (current.parent / "dbip.mmdb.previous").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://example.com/x.mmdb", "--output", "x.mmdb"], "uses plain http"),
        (["--url", "https://example.com/x.mmdb"], "--url needs --output"),
        (["--url", "https://example.com/x.mmdb", "--output", "x", "--dir", "d"], "takes neither --config nor --dir"),
        (["--url", "https://example.com/x.mmdb", "--output", "x", "--sha256", "abc"], "64 hexadecimal digits"),
        (["--output", "x.mmdb"], "go with --url"),
    ],
)
def test_plain_url_bad_arguments(capsys: Any, args: list[str], message: str) -> None:
    assert main(["db", "update", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geofence: error: ") and err.count("\n") == 1 and message in err, err
