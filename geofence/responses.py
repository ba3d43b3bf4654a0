"""Denial responses: 451 / 401 / 503 as RFC 9457 problem details (or HTML), with RFC 7725 ``blocked-by``.

What a denial tells the caller is what the decision's reasons say — which rule and which class — and never
anything an attacker could use: no paths, no database names, no stack traces (a 503's internal detail is
logged, not sent). Every denial is ``Cache-Control: private, no-store`` with ``Vary`` on the inputs, because a
451 is cacheable by default and a shared cache must never replay one caller's decision to another.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from .decision import (
    AUDIT_UNAVAILABLE,
    CLIENT_ADDRESS_INVALID,
    DATABASE_STALE,
    ERROR,
    IDENTITY_INVALID,
    LOCATION_UNKNOWN,
    Decision,
)

__all__ = ["DenialResponse", "ResponseConfig", "denial_response"]

_TITLES: Final = {
    451: "Unavailable For Legal Reasons",
    401: "Verified Identity Required",
    503: "Access Could Not Be Evaluated",
}
_DETAILS: Final = {
    451: "This resource is not available to you: export-control rules do not allow it for your location or identity.",
    401: "This resource is export-controlled: present a verified identity that shows who may receive it.",
    503: "The request could not be evaluated against export-control rules; it was refused to be safe. Try again later.",
}
_TYPES: Final = {451: "legal-block", 401: "identity-required", 503: "not-evaluated"}
# Reasons whose detail describes the deployment (proxies, headers, databases) get a generic public wording;
# the specifics go to the log and the audit hook.
_PUBLIC_DETAILS: Final = {
    ERROR: "the request could not be evaluated",
    DATABASE_STALE: "the location data is out of date",
    AUDIT_UNAVAILABLE: "the decision could not be recorded",
    LOCATION_UNKNOWN: "the location of the request could not be established",
    CLIENT_ADDRESS_INVALID: "the client address could not be established through the proxies in front of this service",
}


@dataclass(frozen=True)
class DenialResponse:
    """A complete HTTP response: status, headers (lower-case names) and body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class ResponseConfig:
    """How denials look. ``blocked_by`` is the operator's URI for RFC 7725's ``Link: <...>; rel="blocked-by"``
    (it identifies who blocks — you — not the authority that demanded it). ``problem_type_base`` prefixes the
    RFC 9457 ``type`` (default: a ``tag:`` URI, which needs no server)."""

    blocked_by: str | None = None
    problem_type_base: str = "tag:geofence,2026:"
    vary: tuple[str, ...] = ("Accept", "Authorization", "Cookie")
    realm: str = "geofence"
    hook: Callable[[Decision, MutableMapping[str, Any]], DenialResponse | None] | None = None


def _prefers_html(accept: str) -> bool:
    """True when the client ranks text/html above JSON (a browser), by q-values then order."""
    best_html = best_json = -1.0
    for position, item in enumerate(accept.split(",")):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        score = q - position * 1e-6
        if media == "text/html":
            best_html = max(best_html, score)
        elif media in ("application/json", "application/problem+json", "application/*"):
            best_json = max(best_json, score)
    return best_html > 0 and best_html > best_json


def denial_response(
    decision: Decision, config: ResponseConfig, accept: str = "", scope: MutableMapping[str, Any] | None = None
) -> DenialResponse:
    """The response for a denied *decision* (custom hook first, then problem JSON or HTML)."""
    if config.hook is not None and scope is not None:
        custom = config.hook(decision, scope)
        if custom is not None:
            return custom
    status = decision.status if decision.status in _TITLES else 451
    reasons = [{"code": r.code, "detail": _PUBLIC_DETAILS.get(r.code, r.detail)} for r in decision.reasons]
    problem = {
        "type": config.problem_type_base + _TYPES[status],
        "title": _TITLES[status],
        "status": status,
        "detail": _DETAILS[status],
        "reasons": reasons,
        "export_class": decision.export_class,
        "policy_version": decision.policy_version,
    }
    headers = [
        (b"cache-control", b"private, no-store"),
        (b"vary", ", ".join(config.vary).encode("latin-1")),
    ]
    if config.blocked_by and status == 451:
        headers.append((b"link", f'<{config.blocked_by}>; rel="blocked-by"'.encode("latin-1")))
    if status == 401:
        error = ', error="invalid_token"' if any(r.code == IDENTITY_INVALID for r in decision.reasons) else ""
        headers.append((b"www-authenticate", f'Bearer realm="{config.realm}"{error}'.encode("latin-1")))
    if status == 503:
        headers.append((b"retry-after", b"30"))
    if _prefers_html(accept):
        body = _html(problem, config).encode()
        headers.append((b"content-type", b"text/html; charset=utf-8"))
    else:
        body = json.dumps(problem).encode()
        headers.append((b"content-type", b"application/problem+json"))
    headers.append((b"content-length", str(len(body)).encode()))
    return DenialResponse(status, tuple(headers), body)


def _html(problem: dict[str, Any], config: ResponseConfig) -> str:
    esc = html.escape
    items = "".join(f"<li><code>{esc(r['code'])}</code>: {esc(r['detail'])}</li>" for r in problem["reasons"])
    link = (
        f'<p>Blocked by <a href="{esc(config.blocked_by)}">{esc(config.blocked_by)}</a>.</p>'
        if config.blocked_by
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{problem['status']} {esc(problem['title'])}</title></head><body>"
        f"<h1>{problem['status']} {esc(problem['title'])}</h1><p>{esc(problem['detail'])}</p>"
        f"<ul>{items}</ul>{link}"
        f"<p><small>Export class {esc(problem['export_class'])}, policy {esc(problem['policy_version'])}.</small></p>"
        "</body></html>"
    )
