"""``geofence db info``: a database's metadata, schema, build date and age, and a walk of every record."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final, TextIO

from maxminddb.errors import InvalidDatabaseError

from ..errors import GeofenceError
from ..evidence.freshness import stale_message
from ..geoip.databases import GeoDatabase, default_database_path, open_database

__all__ = ["ATTRIBUTION", "db_info"]

ATTRIBUTION: Final = "IP geolocation by DB-IP (https://db-ip.com), licensed CC BY 4.0"


def db_info(args: argparse.Namespace) -> int:
    """``geofence db info``: what a database is, how old, and (``--verify``) whether every record reads."""
    path = args.path or str(default_database_path())
    db = open_database(path)
    try:
        report = _describe(db)
        if args.verify:
            report["verified_networks"] = _verify(db)
        stale = stale_message([db.info], args.max_age_days, time.time())
    finally:
        db.close()
    if stale is not None:
        print(f"geofence: warning: {stale}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(key) for key in report)
        for key, value in report.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            shown = "-" if shown in ("", None) else shown
            print(f"{key.replace('_', ' '):<{width}}  {shown}")
        if Path(path).resolve() == default_database_path():
            print(f"{'attribution':<{width}}  {ATTRIBUTION}")
    return 0


def _describe(db: GeoDatabase) -> dict[str, Any]:
    meta, info = db.metadata, db.info
    age_days = int((time.time() - info.build_epoch) // 86400)
    return {
        "path": info.path,
        "type": info.type,
        "schema": info.schema,
        "ip_version": meta.ip_version,
        "node_count": meta.node_count,
        "record_size": meta.record_size,
        "binary_format": f"{meta.binary_format_major_version}.{meta.binary_format_minor_version}",
        "build_epoch": info.build_epoch,
        "build_date": info.build_date.isoformat(),
        "age_days": age_days,
        "languages": list(meta.languages),
        "description": dict(meta.description).get("en") or next(iter(dict(meta.description).values()), ""),
        "size_bytes": os.path.getsize(info.path),
    }


def _verify(db: GeoDatabase, progress: TextIO = sys.stderr) -> int:
    """Walk every network and adapt every record: finds corruption a spot check at open time cannot. A city
    database takes a minute or more, so a terminal sees the count go up (pipes and logs see nothing)."""
    count = 0
    shown = progress.isatty()
    try:
        for _network, record in db.reader:
            db.facts(record)
            count += 1
            if shown and count % _PROGRESS_EVERY == 0:
                print(f"\rverifying {db.info.path}: {count:,} networks", end="", file=progress, flush=True)
    except (InvalidDatabaseError, ValueError, UnicodeDecodeError) as exc:
        raise GeofenceError(f"{db.info.path}: corrupt after {count} networks ({exc})") from None
    finally:
        if shown and count >= _PROGRESS_EVERY:
            print("\r\033[K", end="", file=progress, flush=True)  # the line the count was on, cleared
    return count


_PROGRESS_EVERY: Final = 20_000
