"""Reading MaxMind's ``GeoIP.conf`` and ``GEOIPUPDATE_*`` variables, as ``geoipupdate`` does.

One configuration serves both tools, so a host that already runs ``geoipupdate`` (or its Docker image, which is
configured by environment only) can switch to ``geofence db update`` without a second set of secrets.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ...errors import GeofenceError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DATABASE_DIRECTORY",
    "DEFAULT_HOST",
    "EDITION_ID",
    "LOCK_FILE_NAME",
    "UpdateConfig",
    "check_url",
    "load_config",
]

DEFAULT_CONFIG_FILE: Final = "/usr/local/etc/GeoIP.conf"
DEFAULT_DATABASE_DIRECTORY: Final = "/usr/local/share/GeoIP"
DEFAULT_HOST: Final = "https://updates.maxmind.com"
LOCK_FILE_NAME: Final = ".geoipupdate.lock"  # geoipupdate's own: the two tools then exclude each other

# Edition IDs become file names: nothing that could climb out of the database directory.
EDITION_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_KNOWN: Final = frozenset({"AccountID", "LicenseKey", "EditionIDs", "DatabaseDirectory", "Host", "LockFile"})
# Options geoipupdate knows that change nothing here (retries, parallel downloads, file times, legacy TLS knobs).
_IGNORED: Final = frozenset(
    {"PreserveFileTimes", "RetryFor", "Parallelism", "Protocol", "SkipHostnameVerification", "SkipPeerVerification"}
)


class ConfigError(GeofenceError):
    """The update configuration is missing, malformed or unsafe."""


@dataclass(frozen=True)
class UpdateConfig:
    """Everything one update run needs; ``url`` is the service root, scheme included."""

    account_id: int
    license_key: str
    edition_ids: tuple[str, ...]
    database_directory: Path
    url: str = DEFAULT_HOST
    lock_file: Path | None = None

    @property
    def lock_path(self) -> Path:
        return self.lock_file or self.database_directory / LOCK_FILE_NAME


def _account_id(value: str) -> int:
    try:
        account = int(value.strip())
    except ValueError:
        raise ConfigError("invalid account ID format") from None
    if account <= 0:
        raise ConfigError("invalid account ID format")
    return account


def _host_url(value: str) -> str:
    """geoipupdate takes a bare host name; a full URL is accepted too, for mirrors and tests."""
    from urllib.parse import urlsplit

    text = value.strip().rstrip("/")
    url = text if "://" in text else "https://" + text
    if urlsplit(url).scheme not in ("https", "http"):
        raise ConfigError(f"Host {value!r} is not a host name or an http(s) URL")
    return check_url(url, "Host", "the licence key would cross the network in clear text")


def check_url(url: str, what: str, why: str) -> str:
    """Refuse anything but https, and plain http to this machine (tests, a local mirror): *why* says the risk."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{what} {shown_url(url)!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(f"{what} {shown_url(url)!r} uses plain http: {why}")
    return url


def shown_url(url: str) -> str:
    """*url* fit for a message or a log: no user:password, no query string (licence keys travel there)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    values: dict[str, str] = {}
    aliases = {"UserId": "AccountID", "ProductIds": "EditionIDs"}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ConfigError(f"{path}: invalid format on line {number}")
        key = aliases.get(fields[0], fields[0])
        if key in values:
            raise ConfigError(f"{path}: `{fields[0]}' is in the config multiple times")
        if key in ("Proxy", "ProxyUserPassword"):
            raise ConfigError(f"{path}: line {number}: {key} is not supported; set https_proxy instead")
        if key not in _IGNORED and key not in (
            "AccountID",
            "LicenseKey",
            "EditionIDs",
            "DatabaseDirectory",
            "Host",
            "LockFile",
        ):
            raise ConfigError(f"{path}: unknown option on line {number}")
        values[key] = " ".join(fields[1:])
    return values


def _secret_file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name)
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"failed to open {name} ({path})") from None


def load_config(
    config_file: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    database_directory: str | os.PathLike[str] | None = None,
) -> UpdateConfig:
    """Merge, lowest priority first: defaults, *config_file*, ``GEOIPUPDATE_*`` variables, *database_directory*.

    Without *config_file*, geoipupdate's default file is read if it exists, so environment-only setups work.
    """
    env = os.environ if env is None else env
    if config_file is None:
        config_file = DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None
    values = _read_file(Path(config_file)) if config_file is not None else {}
    account = values.get("AccountID")
    key = values.get("LicenseKey")
    editions = values.get("EditionIDs", "")
    directory = values.get("DatabaseDirectory", DEFAULT_DATABASE_DIRECTORY)
    host = values.get("Host")
    lock = values.get("LockFile")
    account = env.get("GEOIPUPDATE_ACCOUNT_ID", account)
    account = _secret_file(env, "GEOIPUPDATE_ACCOUNT_ID_FILE") or account
    key = env.get("GEOIPUPDATE_LICENSE_KEY", key)
    key = _secret_file(env, "GEOIPUPDATE_LICENSE_KEY_FILE") or key
    editions = env.get("GEOIPUPDATE_EDITION_IDS", editions)
    directory = env.get("GEOIPUPDATE_DB_DIR", directory)
    host = env.get("GEOIPUPDATE_HOST", host)
    lock = env.get("GEOIPUPDATE_LOCK_FILE", lock)
    if database_directory is not None:
        directory = os.fspath(database_directory)
    if env.get("GEOIPUPDATE_PROXY"):
        raise ConfigError("GEOIPUPDATE_PROXY is not supported; set https_proxy instead")

    edition_ids = tuple(editions.split())
    if not edition_ids:
        raise ConfigError("the `EditionIDs' option is required")
    for edition in edition_ids:
        if not EDITION_ID.fullmatch(edition):
            raise ConfigError(f"edition ID {edition!r} is not a MaxMind edition ID")
    if not account:
        raise ConfigError("the `AccountID' option is required")
    if not key:
        raise ConfigError("the `LicenseKey' option is required")
    if key == "000000000000":
        raise ConfigError("a real AccountID and LicenseKey are required (000000000000 is the old free-download key)")
    return UpdateConfig(
        account_id=_account_id(account),
        license_key=key,
        edition_ids=edition_ids,
        database_directory=Path(directory),
        url=_host_url(host) if host else DEFAULT_HOST,
        lock_file=Path(lock) if lock else None,
    )
