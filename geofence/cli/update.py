"""``geofence db update``: geoipupdate's job, with validation before a database is swapped in.

Exit codes: 0 every edition updated or unchanged, 1 an edition failed or another update holds the lock, 2 bad
configuration or arguments. Errors are one line on stderr; ``--json`` results go to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import GeofenceError
from ..geoip.update.conf import DEFAULT_CONFIG_FILE, check_url, load_config

__all__ = ["register_update"]

EXIT_FAILED = 1


def register_update(db: Any) -> None:
    """Add ``update`` to the ``db`` subcommands (*db* is argparse's subparsers action)."""
    update = db.add_parser(
        "update",
        help="download new GeoIP databases (geoipupdate-compatible)",
        description="Update the editions in GeoIP.conf from MaxMind's update service, like geoipupdate, but "
        "validate each new file (type, IP version, build date, lookups) before renaming it into place. "
        "GEOIPUPDATE_* environment variables override the file.",
    )
    update.add_argument(
        "--config", metavar="FILE", help=f"GeoIP.conf (default: {DEFAULT_CONFIG_FILE} if it exists, else env only)"
    )
    update.add_argument("--dir", metavar="DIR", help="database directory (overrides DatabaseDirectory)")
    update.add_argument("--json", action="store_true", help="one JSON object per edition per line")
    update.add_argument("--force", action="store_true", help="install a database even if it is older than the current")
    update.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    plain = update.add_argument_group("plain download (instead of GeoIP.conf), e.g. a DB-IP Lite file")
    plain.add_argument("--url", help="https URL of a .mmdb, .mmdb.gz or .tar.gz")
    plain.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the file as served")
    plain.add_argument("--output", metavar="PATH", help="the database file to replace (required with --url)")
    update.set_defaults(handler=update_command)


class _Progress:
    """A one-line byte counter, redrawn in place: for a person watching a terminal, never for logs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = ""

    def __call__(self, edition: str, done: int, total: int | None) -> None:
        text = f"{edition}: {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
        if text != self.shown:
            self.out.write(f"\r{text}\x1b[K")
            self.out.flush()
            self.shown = text

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()


def update_command(args: argparse.Namespace) -> int:
    from ..geoip.update.updater import LockBusyError, UpdateError, update_databases, update_from_url

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise GeofenceError("--timeout must be a positive number of seconds")
    if args.url is None and (args.sha256 or args.output):
        raise GeofenceError("--sha256 and --output go with --url")
    if args.url is not None:
        if not args.output or args.config or args.dir:
            raise GeofenceError("--url needs --output, and takes neither --config nor --dir")
        if args.sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
            raise GeofenceError("--sha256 must be 64 hexadecimal digits")
        check_url(args.url, "--url", "the download could be altered on the way")
    else:
        config = load_config(args.config, database_directory=args.dir)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        if args.url is not None:
            output = Path(args.output)
            results = [update_from_url(args.url, output, args.sha256, args.timeout, args.force, progress)]
        else:
            results = update_databases(config, timeout=args.timeout, force=args.force, progress=progress)
    except (LockBusyError, UpdateError) as exc:
        print(f"geofence: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if progress is not None:
            progress.clear()
    for result in results:
        if args.json:
            print(json.dumps(dataclasses.asdict(result)))
        elif result.status != "failed":
            print(f"{result.edition}: {result.status} ({result.path}, built {result.build_date or 'unknown'})")
    failed = [result for result in results if result.status == "failed"]
    if failed:
        reasons = "; ".join(f"{result.edition}: {result.error}" for result in failed)
        print(f"geofence: error: {len(failed)} of {len(results)} editions failed: {reasons}", file=sys.stderr)
        return EXIT_FAILED
    return 0
