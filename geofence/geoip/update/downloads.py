"""Downloads for ``geofence db update``: geoipupdate's two requests (metadata, then the archive) and a plain URL,
each with one-line errors, a timeout on every socket operation, and the database unpacked with a size limit
(a gzip bomb must not fill the disk) while its bytes are hashed as served."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tarfile
import zlib
from collections.abc import Callable
from typing import IO, Any, Final

from ...errors import UpdateError
from ...version import __version__
from .conf import UpdateConfig

__all__ = ["Download", "MaxMindClient", "Progress", "extract", "get", "reason"]

Progress = Callable[[str, int, int | None], None]
"""``progress(edition, bytes_so_far, total_or_None)``, called while downloading."""

_MD5: Final = re.compile(r"[0-9a-f]{32}")
_DATE: Final = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_CHUNK: Final = 1 << 16
_MAX_SIZE: Final = 4 << 30  # uncompressed: a gzip bomb must not fill the disk


def get(url: str, timeout: float, auth: str | None = None) -> Any:
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
        raise UpdateError(f"cannot reach {origin}: {reason(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UpdateError(f"cannot reach {origin}: {reason(exc)}") from None


class MaxMindClient:
    """geoipupdate's two requests, authenticated with the account ID and licence key."""

    def __init__(self, config: UpdateConfig, timeout: float) -> None:
        self.base = config.url
        self.timeout = timeout
        token = base64.b64encode(f"{config.account_id}:{config.license_key}".encode()).decode("ascii")
        self.auth = f"Basic {token}"

    def open(self, path_and_query: str) -> Any:
        """Edition IDs are checked to be ``[A-Za-z0-9_.-]`` and dates digits: nothing here needs quoting."""
        return get(self.base + path_and_query, self.timeout, self.auth)

    def metadata(self, edition: str) -> tuple[str, str]:
        """(md5, YYYYMMDD) of the newest build of *edition*."""
        import http.client

        with self.open(f"/geoip/updates/metadata?edition_id={edition}") as response:
            try:
                body = json.loads(response.read(1 << 20))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise UpdateError(f"unreadable metadata from {self.base}: {reason(exc)}") from None
        found = body.get("databases") if isinstance(body, dict) else None
        if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], dict):
            raise UpdateError(f"metadata from {self.base} does not describe edition {edition}")
        md5, date = found[0].get("md5"), found[0].get("date")
        match = _DATE.fullmatch(date) if isinstance(date, str) else None
        if not isinstance(md5, str) or not _MD5.fullmatch(md5.lower()) or match is None:
            raise UpdateError(f"metadata from {self.base} has no valid md5 and date for {edition}")
        return md5.lower(), "".join(match.groups())


def reason(exc: object) -> str:
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


def extract(download: Download, out: IO[bytes], edition: str, kind: str) -> str:
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
        raise UpdateError(f"{edition}: corrupt or truncated archive ({reason(exc)})") from None
    except OSError as exc:
        raise UpdateError(f"{edition}: download failed ({reason(exc)})") from None
    raise UpdateError(f"{edition}: the archive holds no .mmdb file")


class Download:
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
