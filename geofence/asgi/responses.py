"""Denial responses: 451 / 401 / 503 as RFC 9457 problem details (or HTML), with RFC 7725 ``blocked-by``.

What a denial tells the caller is what the decision's reasons say — which rule and which class — and never
anything an attacker could use: no paths, no database names, no stack traces (a 503's internal detail is
logged, not sent). Every denial is ``Cache-Control: private, no-store`` with ``Vary`` on the inputs, because a
451 is cacheable by default and a shared cache must never replay one caller's decision to another.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from string import Template
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ..policy.decision import (
    AUDIT_UNAVAILABLE,
    CLIENT_ADDRESS_INVALID,
    DATABASE_STALE,
    ERROR,
    IDENTITY_INVALID,
    LOCATION_UNKNOWN,
    Decision,
)
from ..policy.response import default_template

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
# The HTML page in plain words for a non-specialist: heading, what happened, what to do ({contact} is filled
# with the rendered [response] contact, or _NO_CONTACT).
_PAGE: Final = {
    451: (
        "This page is not available to you",
        "This resource is not available to you because of export-control rules for your location or identity. "
        "These laws limit who may receive certain technology. This service must follow them.",
        "If you think this is a mistake, contact {contact}. Give them the request id below, so they can find "
        "this decision.",
    ),
    401: (
        "Please sign in with a verified identity",
        "This resource is export-controlled. You need to sign in with a verified identity to see it. This request "
        "did not include a valid one.",
        "Sign in with a verified identity, then try again. If your session has expired, sign in again. If that "
        "does not help, contact {contact} and give them the request id below.",
    ),
    503: (
        "We could not check your access",
        "We could not check whether this resource may be shown to you. To be safe, the request was refused. "
        "This is usually temporary.",
        "Please try again in a few minutes. If it keeps happening, contact {contact} and give them the request "
        "id below.",
    ),
}
_NO_CONTACT: Final = "the people who run this service"
_EMAIL: Final = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+")
# Only for the HTML page: nothing it shows may run or fetch anything (every value in it is escaped anyway).
_CSP: Final = b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
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
    RFC 9457 ``type`` (default: a ``tag:`` URI, which needs no server). ``contact`` is whom a denied visitor
    may ask (an email address, a URL or plain text); ``template`` the HTML page (None: the bundled one, see
    :func:`geofence.policy.response.read_template` for a checked one)."""

    blocked_by: str | None = None
    problem_type_base: str = "tag:geofence,2026:"
    vary: tuple[str, ...] = ("Accept", "Authorization", "Cookie")
    realm: str = "geofence"
    hook: Callable[[Decision, MutableMapping[str, Any]], DenialResponse | None] | None = None
    contact: str | None = None
    template: Template | None = None


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
    decision: Decision,
    config: ResponseConfig,
    accept: str = "",
    scope: MutableMapping[str, Any] | None = None,
    request_id: str | None = None,
) -> DenialResponse:
    """The response for a denied *decision* (custom hook first, then problem JSON or HTML). *request_id* is the
    id the log line and the audit record carry (:func:`geofence.request_id`): the page and the JSON
    show it, so support can find the decision."""
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
    if request_id is not None:
        problem["request_id"] = request_id
    if config.contact:
        problem["contact"] = config.contact
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
        headers.append((b"content-security-policy", _CSP))
    else:
        body = json.dumps(problem).encode()
        headers.append((b"content-type", b"application/problem+json"))
    headers.append((b"content-length", str(len(body)).encode()))
    return DenialResponse(status, tuple(headers), body)


def _html(problem: dict[str, Any], config: ResponseConfig) -> str:
    """The HTML page: *config*'s template (or the bundled one) with every value HTML-escaped."""
    esc = html.escape
    status = problem["status"]
    heading, message, next_steps = _PAGE[status]
    contact = config.contact or ""
    blocked_by = config.blocked_by if status == 451 and config.blocked_by else ""
    values = {
        "status": str(status),
        "title": esc(problem["title"]),
        "heading": esc(heading),
        "message": esc(message),
        "next_steps": esc(next_steps).replace("{contact}", _linked(contact) if contact else esc(_NO_CONTACT)),
        "export_class": esc(str(problem["export_class"])),
        "reasons": "".join(f"<li>{esc(r['detail'])} (<code>{esc(r['code'])}</code>)</li>" for r in problem["reasons"]),
        "policy_version": esc(str(problem["policy_version"])),
        "request_id": esc(problem.get("request_id", "")),
        "contact": esc(contact),
        "contact_html": _linked(contact) if contact else "",
        "blocked_by": esc(blocked_by),
        "blocked_by_html": f"<p>Blocked by {_linked(blocked_by)}.</p>" if blocked_by else "",
    }
    return (config.template or default_template()).substitute(values)


def _linked(text: str) -> str:
    """*text* (a contact or a URI) as HTML: an email address as a ``mailto:`` link, an absolute http(s) URL as
    a link, anything else as text — always escaped."""
    esc = html.escape
    if _EMAIL.fullmatch(text):
        return f'<a href="mailto:{esc(quote(text, safe="@+"))}">{esc(text)}</a>'
    try:
        url = urlsplit(text)
    except ValueError:
        return esc(text)
    if url.scheme.lower() in ("http", "https") and url.netloc and not any(c.isspace() for c in text):
        return f'<a href="{esc(text)}">{esc(text)}</a>'
    return esc(text)
