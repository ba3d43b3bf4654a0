"""``geofence audit``: verify, summarise and replay audit logs written by :class:`geofence.evidence.audit.AuditWriter`.

``verify`` exits 0 only when every chain is intact (1 when tampering is found); ``replay`` answers "what would
this policy change have done to the traffic we actually had?" before the change is deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import GeofenceError
from ..evidence.chart import write_chart
from ..evidence.records import read_records, redecide, verify_files
from ..policy.decision import REPORT_ONLY
from ..policy.load import Policy, load_policy

__all__ = ["register_audit", "replay", "summarize"]

EXIT_OK = 0
EXIT_TAMPERED = 1


def register_audit(commands: Any) -> None:
    """Add the ``audit`` command group to the ``geofence`` subparsers *commands*."""
    audit = commands.add_parser("audit", help="verify, summarise and replay audit logs").add_subparsers(
        title="audit commands", metavar="CMD"
    )
    verify = audit.add_parser(
        "verify",
        help="check the hash chains of audit files",
        description="Check every record's hash and each chain's order; name every edited, deleted, inserted or "
        "reordered record. Exit 0 only when intact, 1 when not, 2 on bad input.",
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, rotated ones included, any order")
    verify.add_argument("--key-env", metavar="VAR", help="environment variable holding the HMAC key")
    verify.add_argument("--head", metavar="HASH", help="a head hash kept elsewhere: finds a truncated tail")
    verify.set_defaults(handler=_verify)

    summary = audit.add_parser(
        "summary",
        help="count decisions by outcome, class, reason, country and hour",
        description="Count audit records by outcome, class, reason, country and hour (UTC).",
    )
    summary.add_argument("files", nargs="+", metavar="FILE")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--chart", metavar="OUT.svg", help="also draw decisions per hour and top countries/reasons")
    summary.set_defaults(handler=_summary)

    replay_cmd = audit.add_parser(
        "replay",
        help="re-decide recorded requests under another policy",
        description="Re-decide every recorded decision's facts under NEW policy and report what would change. "
        'Only recorded decisions can be replayed: record with include = "controlled" or "all".',
    )
    replay_cmd.add_argument("files", nargs="+", metavar="FILE")
    replay_cmd.add_argument("--config", required=True, metavar="NEW.toml", help="the policy to replay under")
    replay_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    replay_cmd.set_defaults(handler=_replay)


def _key(var: str | None) -> bytes | None:
    if var is None:
        return None
    secret = os.environ.get(var)
    if not secret:
        raise GeofenceError(f"--key-env: environment variable {var} is not set")
    return secret.encode()


def _readable(files: Iterable[str]) -> list[str]:
    names = list(files)
    for name in names:
        if not os.path.isfile(name):
            raise GeofenceError(f"{name}: no such file")
    return names


def _verify(args: argparse.Namespace) -> int:
    result = verify_files(_readable(args.files), _key(args.key_env), args.head)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    for head in result.heads.values():
        print(f"chain {head.chain}: {head.seq + 1} records, head {head.hash} ({head.file}:{head.line})")
    if not result.intact:
        print(f"geofence: audit log NOT intact: {len(result.problems)} problem(s)", file=sys.stderr)
        return EXIT_TAMPERED
    print(f"ok: {result.records} records in {len(result.heads)} chain(s), intact")
    return EXIT_OK


def summarize(files: Iterable[str]) -> dict[str, Any]:
    """Counts by outcome, class, reason code, country and UTC hour."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("outcome", "class", "reason", "country", "hour")}
    total = 0
    for _, _, record in read_records(files):
        total += 1
        counts["outcome"][str(record.get("outcome"))] += 1
        counts["class"][str(record.get("class"))] += 1
        for reason in record.get("reasons") or []:
            counts["reason"][str(reason.get("code"))] += 1
        location = (record.get("facts") or {}).get("location") or {}
        counts["country"][str(location.get("country") or "-")] += 1
        counts["hour"][str(record.get("time", ""))[:13] + ":00Z"] += 1
    return {"records": total, **{f"by_{k}": dict(v.most_common()) for k, v in counts.items()}}


def _summary(args: argparse.Namespace) -> int:
    files = _readable(args.files)
    report = summarize(files)
    if args.chart is not None:
        if not args.chart.endswith(".svg"):
            raise GeofenceError(f"--chart {args.chart}: the chart is SVG (it needs no plotting library): name it .svg")
        write_chart(files, Path(args.chart))
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(f"records: {report['records']}")
    for key in ("outcome", "class", "reason", "country", "hour"):
        print(f"\nby {key}:")
        rows = report[f"by_{key}"].items()
        for name, count in sorted(rows) if key == "hour" else rows:
            print(f"  {count:>8}  {name}")
    return EXIT_OK


def replay(files: Iterable[str], policy: Policy) -> dict[str, Any]:
    """Re-decide each record's facts under *policy*; count what flips, by class, reason and country.

    Newly denied records are broken down by their *new* reasons, newly allowed ones by their *old* reasons.
    Records of 503 errors are skipped: their facts may be incomplete."""
    newly_denied = {k: Counter[str]() for k in ("class", "reason", "country")}
    newly_allowed = {k: Counter[str]() for k in ("class", "reason", "country")}
    replayed = skipped = denied = allowed = 0
    for _, _, record in read_records(files):
        new = redecide(record, policy)
        if new is None:
            skipped += 1
            continue
        codes = [r.get("code") for r in record.get("reasons") or [] if isinstance(r, dict)]
        location = new.location
        replayed += 1
        was_allowed = bool(record.get("allowed"))
        country = (location.country if location else None) or "-"
        if was_allowed and not new.allowed:
            denied += 1
            _tally(newly_denied, str(record["class"]), [r.code for r in new.reasons], country)
        elif new.allowed and not was_allowed:
            allowed += 1
            _tally(newly_allowed, str(record["class"]), [str(c) for c in codes if c != REPORT_ONLY], country)
    return {
        "policy": policy.source,
        "policy_version": policy.version,
        "replayed": replayed,
        "skipped": skipped,
        "newly_denied": denied,
        "newly_allowed": allowed,
        "newly_denied_by": {k: dict(v.most_common()) for k, v in newly_denied.items()},
        "newly_allowed_by": {k: dict(v.most_common()) for k, v in newly_allowed.items()},
    }


def _tally(into: dict[str, Counter[str]], export_class: str, codes: list[str], country: str) -> None:
    into["class"][export_class] += 1
    into["country"][country] += 1
    for code in codes:
        into["reason"][code] += 1


def _replay(args: argparse.Namespace) -> int:
    report = replay(_readable(args.files), load_policy(args.config))
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(f"replayed {report['replayed']} records under {report['policy']} (version {report['policy_version']})")
    if report["skipped"]:
        print(f"skipped {report['skipped']} records of errors (503)")
    for side in ("newly_denied", "newly_allowed"):
        print(f"\n{side.replace('_', ' ')}: {report[side]}")
        for key, rows in report[f"{side}_by"].items():
            if rows:
                print(f"  by {key}: " + ", ".join(f"{name} {count}" for name, count in rows.items()))
    return EXIT_OK
