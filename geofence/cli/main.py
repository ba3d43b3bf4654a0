"""The ``geofence`` command: thin shells over the library.

Exit codes: 0 success (``check``: allowed), 1 denied (``check``), 2 bad input (address, database, policy,
arguments); errors are one line on stderr. Set ``GEOFENCE_DEBUG=1`` to get a traceback for an unexpected
error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..errors import DatabaseError, GeofenceError
from ..evidence.freshness import stale_message
from ..geoip.databases import default_database_path, open_database
from ..geoip.location import Location
from ..geoip.locator import Locator
from ..native import describe
from ..network.addresses import parse_address
from ..policy.load import PolicyError, load_policy
from ..version import __version__
from .check import check_command
from .db import ATTRIBUTION, db_info

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except GeofenceError as exc:
        print(f"geofence: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `geofence lookup ... | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("GEOFENCE_DEBUG"):
            raise
        print(f"geofence: internal error: {type(exc).__name__}: {exc} (GEOFENCE_DEBUG=1 shows more)", file=sys.stderr)
        return 70


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geofence",
        description="Export-control geofencing: resolve callers to jurisdictions and decide access.",
    )
    parser.add_argument("--version", action="version", version=f"geofence {__version__}; request path: {describe()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    lookup = commands.add_parser(
        "lookup",
        help="resolve IP addresses to jurisdictions",
        description="Resolve IP addresses with the configured GeoIP databases (default: the bundled DB-IP Lite).",
    )
    lookup.add_argument("ips", nargs="+", metavar="IP", help="IPv4 or IPv6 address; '-' reads addresses from stdin")
    lookup.add_argument(
        "--db",
        action="append",
        metavar="PATH",
        help="a MaxMind-format database; repeat for several, first has priority (default: bundled)",
    )
    lookup.add_argument("--json", action="store_true", help="one JSON object per address per line")
    lookup.set_defaults(handler=_lookup)

    db = _group(commands, "db", "inspect GeoIP databases")
    info = db.add_parser(
        "info",
        help="show a database's type, build date and age",
        description="Show a database's metadata, detected schema, build date and age.",
    )
    info.add_argument("path", nargs="?", metavar="PATH", help="database file (default: the bundled one)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--verify", action="store_true", help="also walk the whole search tree and decode every record")
    info.add_argument(
        "--max-age-days", type=int, metavar="N", help="warn (on stderr) when the database is older than N days"
    )
    info.set_defaults(handler=db_info)
    from .update import register_update

    register_update(db)

    check = commands.add_parser(
        "check",
        help="explain the decision for one request",
        description="Decide one request offline and explain which rule decided. Exit 0 allowed, 1 denied, 2 bad input.",
    )
    client = check.add_mutually_exclusive_group(required=True)
    client.add_argument("--ip", help="the client address")
    client.add_argument(
        "--peer",
        help="the TCP peer instead: the client is resolved from it and the --header forwarding headers "
        "through [proxies], as the middleware would",
    )
    client.add_argument("--record", metavar="JSON", help="explain a recorded audit-trail line under --config")
    what = check.add_mutually_exclusive_group()
    what.add_argument("--class", dest="export_class", metavar="CLASS", help="decide for this export class directly")
    what.add_argument("--path", help="classify this request path (and ?query) with the policy's routes")
    check.add_argument("--method", default="GET", help="request method for --path (default GET)")
    check.add_argument("--host", default="", help="request host for --path")
    check.add_argument("--root-path", default="", help="the ASGI root_path (mount prefix) --path includes")
    check.add_argument("--body", help="request body (JSON text) for routes that classify by JSON body")
    check.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="a request header; repeat for several"
    )
    who = check.add_mutually_exclusive_group()
    who.add_argument("--claims", help="already-verified identity claims, as a JSON object")
    who.add_argument("--token", help="an identity token, verified with the policy's [identity] settings")
    check.add_argument("--config", metavar="FILE", help="policy file (default: the bundled example policy)")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.set_defaults(handler=lambda args: EXIT_OK if check_command(args) else EXIT_DENIED)

    policy = _group(commands, "policy", "work with policy files")
    validate = policy.add_parser(
        "validate",
        help="check a policy file and list every problem",
        description="Validate a policy file: exit 0, or 2 with every problem listed.",
    )
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(handler=_policy_validate)

    from .audit import register_audit

    register_audit(commands)
    demo = commands.add_parser(
        "demo",
        help="serve a demo app behind the middleware",
        description="Serve a catch-all demo app behind GeofenceMiddleware with uvicorn. The default policy is the "
        "bundled example, trusting 127.0.0.1 and ::1 as proxies so X-Forwarded-For can simulate callers.",
    )
    demo.add_argument("--config", metavar="FILE", help="policy file (default: the bundled example, demo proxies)")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    demo.add_argument("--tour", action="store_true", help="run a scripted tour of real requests, then exit")
    demo.set_defaults(handler=_demo)

    token = commands.add_parser(
        "token",
        help="mint a demo identity token that `geofence demo` trusts",
        description="Mint an ES256 identity token (OIDC4IDA verified claims) signed by the local demo key. "
        "For the demo only: the key is generated per user in ~/.cache/geofence.",
    )
    token.add_argument("--nationality", action="append", default=[], metavar="CODE", help="repeat for several")
    token.add_argument("--us-person", action="store_true", help="claim U.S.-person status")
    token.add_argument(
        "--key", metavar="FILE", help="signing key (EC P-256 PEM); created if missing (not its directory)"
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(handler=_token)
    return parser


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def _group(commands: Any, name: str, description: str) -> Any:
    """A command with subcommands (``db``, ``policy``); alone, it prints its own help (exit 2)."""
    group = commands.add_parser(name, help=description, description=description[0].upper() + description[1:] + ".")

    def usage(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(handler=usage)
    return group.add_subparsers(title=f"{name} commands", metavar="CMD")


def _token(args: argparse.Namespace) -> int:
    from ..identity.claims import nationality_code
    from .demo import mint_token

    if args.ttl <= 0:
        raise GeofenceError("--ttl must be positive")
    for code in args.nationality:
        nationality_code(code)  # a clear error for a typo, before anything is signed
    print(mint_token(args.nationality, args.us_person, Path(args.key) if args.key else None, args.ttl))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.tour:
        return demo.tour(args.config)
    demo.serve(args.config, args.host, args.port)
    return EXIT_OK


def _read_ips(values: Sequence[str], stdin: TextIO) -> tuple[list[str], int]:
    """The addresses to look up, and how many lines of standard input were not addresses. Arguments must all be
    addresses (the error names every bad one); a bad line of ``-`` is reported with its number and the others
    are still answered, so one typo in a long list costs one line, not the run. Blank lines and ``#`` comments
    are skipped."""
    ips: list[str] = []
    bad_lines = 0
    for value in values:
        if value != "-":
            ips.append(value)
            continue
        for number, line in enumerate(stdin, 1):
            for word in line.split("#", 1)[0].split():
                try:
                    parse_address(word)
                except GeofenceError as exc:
                    print(f"geofence: line {number}: {exc}", file=sys.stderr)
                    bad_lines += 1
                else:
                    ips.append(word)
    return ips, bad_lines


def _lookup(args: argparse.Namespace) -> int:
    ips, bad_lines = _read_ips(args.ips, sys.stdin)
    if not ips and not bad_lines:
        raise GeofenceError("no addresses given")
    bad = []
    for ip in ips:
        try:
            parse_address(ip)
        except GeofenceError as exc:
            bad.append(str(exc))
    if bad:
        raise GeofenceError("; ".join(bad))
    if not ips:  # every line of standard input was bad (each reported)
        return EXIT_USAGE
    with Locator(args.db) as locator:
        results = [(ip, locator.lookup(ip)) for ip in ips]
        if args.json:
            for ip, location in results:
                print(json.dumps({"ip": ip, "address": parse_address(ip).text, **location.as_dict()}))
        else:
            _print_table(results, locator, sys.stdout)
    return EXIT_USAGE if bad_lines else EXIT_OK


def _anonymizer_text(location: Location) -> str:
    if location.anonymizer is None:
        return "n/a"
    flags = [name for name, value in location.anonymizer.as_dict().items() if value]
    return ",".join(flags) if flags else "no"


def _print_table(results: list[tuple[str, Location]], locator: Locator, out: TextIO) -> None:
    headers = ("IP", "COUNTRY", "REGISTERED", "REPRESENTED", "SUBDIVISIONS", "NETWORK", "ANONYMIZER", "NOTE")
    rows = []
    for ip, loc in results:
        represented = loc.represented_country or "-"
        if loc.represented_country_type:
            represented += f" ({loc.represented_country_type})"
        notes = []
        if loc.reason:
            notes.append(f"not geolocatable: {loc.reason}")
        if loc.other_countries:
            notes.append("other databases say " + ",".join(loc.other_countries))
        rows.append(
            (
                ip,
                loc.country or "-",
                loc.registered_country or "-",
                represented,
                ",".join(loc.subdivisions) or "-",
                loc.network,
                _anonymizer_text(loc),
                "; ".join(notes),
            )
        )
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    print(file=out)
    bundled = default_database_path()
    for db in locator.databases:
        info = db.info
        print(f"database: {info.path} ({info.type}, built {info.build_date.isoformat()})", file=out)
        if Path(info.path) == bundled:
            print(f"          {ATTRIBUTION}", file=out)


def _policy_validate(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"geofence: error: {len(exc.problems)} problem(s) in {exc.source}", file=sys.stderr)
        return EXIT_USAGE
    problems = []
    anonymizer_db = False
    for i, path in enumerate(policy.databases or [str(default_database_path())]):
        try:
            db = open_database(path)
        except DatabaseError as exc:
            problems.append(f"{args.file}: geoip.databases[{i}]: {exc}")
            continue
        anonymizer_db = anonymizer_db or db.anonymizer_capable
        stale = stale_message([db.info], policy.max_age_days, time.time())
        if stale is not None:
            print(
                f"{args.file}: warning: geoip.databases[{i}]: {stale} (on_stale = {policy.on_stale})", file=sys.stderr
            )
        db.close()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"geofence: error: {len(problems)} problem(s) in {args.file}", file=sys.stderr)
        return EXIT_USAGE
    for cls in policy.classes.values():
        if cls.anonymizers == "deny" and not anonymizer_db:
            print(
                f'{args.file}: warning: classes.{cls.name}.anonymizers = "deny" has no effect: '
                "no anonymizer database (GeoIP2 Anonymous IP / Anonymous Plus) is configured",
                file=sys.stderr,
            )
    as_of = policy.reference.as_of.isoformat() if policy.reference.as_of else "unknown"
    print(
        f"{args.file}: ok: {len(policy.classes)} classes, {len(policy.routes.rules)} routes, "
        f"policy version {policy.version}, reference data as of {as_of}"
    )
    return EXIT_OK
