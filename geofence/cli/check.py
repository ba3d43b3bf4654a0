"""``geofence check``: one request decided offline from an address, a route or class, and an identity —
with a trace of every rule, so an operator can explain any decision the middleware made."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..errors import DatabaseError, GeofenceError
from ..evidence.freshness import stale_decision, stale_message
from ..evidence.records import redecide
from ..identity.claims import Identity, IdentityError, identity_from_claims
from ..identity.tokens import TokenVerifier
from ..network.addresses import parse_address
from ..network.client_ip import ProxyConfig, resolve_client
from ..policy.decision import Decision, decide, error_decision
from ..policy.load import Policy, load_policy

__all__ = ["check_command"]


def check_command(args: argparse.Namespace) -> bool:
    """``geofence check``: decide one request offline and print it with a trace of every rule; True if allowed."""
    policy = load_policy(args.config)
    if args.record is not None:
        return _explain_record(args.record, policy, args.json)
    headers = [(n.strip().lower().encode(), v.strip().encode()) for n, _, v in (h.partition(":") for h in args.header)]
    key, client_problem, shown = _client(args.ip, args.peer, headers, policy)
    claims = None
    if args.claims is not None:
        try:
            claims = json.loads(args.claims)
        except ValueError as exc:
            raise GeofenceError(f"--claims is not valid JSON ({exc})") from None
    trace: list[str] = []
    request: dict[str, Any] = {"ip": shown}
    if client_problem is not None:
        trace.append(f"client: {client_problem}")
    route_exempt = None
    if args.export_class is not None:
        if args.export_class not in policy.classes:
            raise GeofenceError(f"unknown class {args.export_class!r} (defined: {', '.join(policy.classes)})")
        export_class = args.export_class
        spellings = [export_class]
        trace.append(f"class: {export_class} (given)")
    else:
        from urllib.parse import unquote

        target = args.path or "/"
        if not target.startswith("/"):  # a relative path is no request a server would pass on
            raise GeofenceError(f"--path {target[:60]!r} must start with '/' (the path as the server sees it)")
        path, _, query = target.partition("?")
        request.update(method=args.method.upper(), host=args.host, path=target)
        route = policy.routes.classify(args.method, args.host, unquote(path), args.root_path)  # as servers decode
        body = args.body.encode() if args.body is not None else b""
        classes = [
            r.params.classify(body, query.encode(), headers) if r.params is not None else (r.export_class, r.describe())
            for r in (route, *route.also)
        ]
        export_class, why = classes[0]
        spellings = [c for c, _ in classes]
        trace.append(f"class: {export_class} ({why})")
        trace.extend(f"another spelling the app may route is {c} ({w}): it must pass too" for c, w in classes[1:])
        route_exempt = route.exempt
    exempt = policy.exempt_network(key) or (route_exempt if args.export_class is None else None)
    identity, problem = None, None
    if claims is not None:
        try:
            tokens = policy.tokens  # the same rules as for a token: which claims count, which evidence is needed
            if tokens is not None:
                identity = identity_from_claims(
                    claims, policy.claim_names, top_level=tokens.top_level_claims, requirements=tokens.requirements
                )
            else:
                identity = identity_from_claims(claims, policy.claim_names)
        except IdentityError as exc:
            problem = f"identity claims rejected: {exc}"
    elif args.token is not None:
        identity, problem = _verify_token(policy, args.token)
        trace.append(f"token: {'verified' if identity is not None else problem}")
    if identity is not None:
        trace.append(f"claims used: {identity.describe_source()}")
    with policy.locator() as locator:
        try:
            location = locator.lookup_key(key) if key is not None else None
        except DatabaseError as exc:
            decision = error_decision(policy, export_class, str(exc))
        else:  # every spelling the app may route must pass, as in the middleware: the first denial wins
            decisions = [
                decide(
                    policy,
                    c,
                    location,
                    identity,
                    identity_problem=problem,
                    client_problem=client_problem,
                    exempt=exempt,
                    trace=trace if i == 0 else None,
                )
                for i, c in enumerate(spellings)
            ]
            decision = next((d for d in decisions if not d.allowed), decisions[0])
        stale = stale_message((db.info for db in locator.databases), policy.max_age_days, time.time())
        if stale is not None:  # as the middleware would answer now
            trace.append(f"databases: {stale}; on_stale = {policy.on_stale}")
            decision = stale_decision(policy, decision, stale)
    if args.json:
        print(json.dumps({"request": request, **decision.as_dict(), "trace": trace}))
    else:
        _print_decision(decision, request, trace, sys.stdout)
    return decision.allowed


def _client(
    ip: str | None, peer: str | None, headers: list[tuple[bytes, bytes]], policy: Policy
) -> tuple[int | None, str | None, str]:
    """(address key, broken-chain problem, what to show) for ``--ip``, or for ``--peer`` with forwarding headers
    resolved through ``[proxies]`` exactly as the middleware resolves them."""
    if ip is not None:
        return parse_address(ip).key, None, ip
    assert peer is not None
    config = ProxyConfig.from_networks(policy.trusted_proxies, policy.proxy_header)
    forwarding: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in config.watched:
            forwarding[name] = forwarding[name] + b"," + value if name in forwarding else value
    client = resolve_client({"client": (peer, 0)}, config, forwarding)
    if client.broken or client.key is None:
        return None, client.problem if client.broken else None, f"peer {peer} ({client.problem})"
    return client.key, None, f"{client.text} (peer {peer}, via {client.via})"


def _explain_record(line: str, policy: Policy, as_json: bool) -> bool:
    """Re-decide one audit-trail record under *policy*, with a trace, beside what was recorded."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise GeofenceError(f"--record is not a JSON audit record ({exc})") from None
    if not isinstance(record, dict):
        raise GeofenceError("--record is not a JSON audit record (not an object)")
    trace = [
        f"recorded: {record.get('outcome')} {record.get('status')} under policy {record.get('policy')} "
        f"at {record.get('time')} (request {record.get('request_id')})"
    ]
    decision = redecide(record, policy, trace)
    if decision is None:
        raise GeofenceError("the record is of an error (503) or names no class: nothing to re-decide")
    network = decision.location.network if decision.location is not None else "-"
    request = {"ip": f"recorded network {network}"}
    if as_json:
        print(json.dumps({"request": request, **decision.as_dict(), "trace": trace}))
    else:
        _print_decision(decision, request, trace, sys.stdout)
    return decision.allowed


def _verify_token(policy: Policy, token: str) -> tuple[Identity | None, str | None]:
    if policy.tokens is None:
        raise GeofenceError("the policy configures no token verification ([identity] issuer, audience, key source)")
    verifier = TokenVerifier(policy.tokens)
    if not verifier.ready.wait(10):
        raise GeofenceError(f"could not fetch signing keys from {policy.tokens.jwks_url}")
    try:
        return verifier.identity(token.strip()), None
    except IdentityError as exc:
        return None, str(exc)


def _print_decision(decision: Decision, request: dict[str, Any], trace: list[str], out: TextIO) -> None:
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    if decision.allowed and decision.would_deny:
        verdict = "ALLOWED (report mode: would be denied)"
    print(f"{verdict}  status {decision.status}  class {decision.export_class}  mode {decision.mode}", file=out)
    if "path" in request:
        print(f"  request   {request['method']} {request['host']}{request['path']}", file=out)
    location = decision.location
    if location is not None:
        where = location.country or f"not geolocatable ({location.reason})"
        dbs = ", ".join(f"{Path(d.path).name} {d.build_date.isoformat()}" for d in location.databases) or "none"
        print(f"  address   {request['ip']} -> {where}, network {location.network} (databases: {dbs})", file=out)
    for i, line in enumerate(trace):
        print(f"  {'trace' if i == 0 else '':<8}  {line}", file=out)
    for reason in decision.reasons:
        print(f"  reason    {reason.code}: {reason.detail}", file=out)
    print(f"  policy    version {decision.policy_version}", file=out)
