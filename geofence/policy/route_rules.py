"""``[[routes]]`` in the policy file: each rule validated (keys, path, methods, a known class) and compiled
into a :class:`geofence.routing.rule.RouteRule`; parameter rules (``json_field``, ``query_param``, ``header``)
check themselves (:meth:`RouteRule.problems`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

from ..routing.rule import DEFAULT_MAX_BODY, RouteRule
from .checks import Checker
from .classes import ClassPolicy

__all__ = ["known_class", "route_rule"]

_ROUTE_KEYS: Final = (
    "path",
    "method",
    "host",
    "class",
    "json_field",
    "query_param",
    "header",
    "equals",
    "matches",
    "max_body_bytes",
)
_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "WEBSOCKET")


def known_class(name: str, path: str, classes: Mapping[str, ClassPolicy], check: Checker) -> None:
    """Report *name* at *path* unless the policy defines that class (with the nearest name as a hint)."""
    if classes and name not in classes:
        close = difflib.get_close_matches(name, list(classes), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f" (defined: {', '.join(classes)})"
        check.error(path, f"unknown class {name!r}{hint}")


def route_rule(i: int, raw: Any, classes: Mapping[str, ClassPolicy], check: Checker) -> RouteRule | None:
    """``routes[i]`` compiled, or None when it cannot be (its problems are reported to *check*)."""
    path = f"routes[{i}]"
    table = check.table(raw, path, _ROUTE_KEYS)
    if not isinstance(raw, dict):
        return None
    glob = check.string(table.get("path"), f"{path}.path")
    if glob is None:
        check.error(f"{path}.path", "required")
    elif not glob.startswith("/"):
        check.error(f"{path}.path", f"{glob!r} must start with '/'")
    export_class = check.string(table.get("class"), f"{path}.class")
    if export_class is None:
        check.error(f"{path}.class", "required")
    else:
        known_class(export_class, f"{path}.class", classes, check)
    methods = tuple(m.upper() for m in check.strings(table.get("method"), f"{path}.method"))
    if "GET" in methods:  # frameworks answer HEAD with the GET handler, and a WebSocket handshake is a GET
        methods += tuple(m for m in ("HEAD", "WEBSOCKET") if m not in methods)
    for m in methods:
        if m not in _METHODS:
            check.error(f"{path}.method", f"{m!r} is not an HTTP method (or WEBSOCKET)")
    host = check.string(table.get("host"), f"{path}.host")
    json_field = check.string(table.get("json_field"), f"{path}.json_field")
    max_body = check.integer(table.get("max_body_bytes"), f"{path}.max_body_bytes")
    if max_body is not None and json_field is None:
        check.error(f"{path}.max_body_bytes", "applies to json_field rules only")
    rule = RouteRule(
        path=glob or "/",
        export_class=export_class or "",
        methods=methods,
        host=host.lower().rstrip(".") if host is not None else None,  # as requests' hosts are compared
        json_field=json_field,
        query_param=check.string(table.get("query_param"), f"{path}.query_param"),
        header=check.string(table.get("header"), f"{path}.header"),
        equals=tuple(check.strings(table.get("equals"), f"{path}.equals")),
        matches=tuple(check.strings(table.get("matches"), f"{path}.matches")),
        max_body_bytes=max_body or DEFAULT_MAX_BODY,
        index=i,
    )
    for key, message in rule.problems():
        check.error(f"{path}.{key}" if key else path, message)
    return rule if glob is not None and export_class is not None else None
