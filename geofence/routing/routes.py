"""Route rules -> export class.

Rules are tried in order and the first match wins. Each rule is a regular expression over ``"METHOD host path"``;
a :class:`~geofence.routing.index.RouteIndex` picks the few rules a path can match, and one alternation of those
decides, so a new path costs about the same whatever the number of rules. Results are memoised per (method,
host, path, root_path).

The app may route a request by a different spelling than the one on the wire: the path without the ASGI
``root_path`` (a mounted app), a path with ``//``, ``.``, ``..`` or a trailing slash that the framework
collapses or redirects, a host in another case or with a trailing dot. :meth:`RouteTable.classify` classifies
every spelling and returns the others in ``Route.also`` when they differ: each must allow the request.

A rule that reads the JSON body, a query parameter or a header is finished per request by
:class:`~geofence.routing.params.ParamRule`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Final, NamedTuple

from ..caches.bounded import BoundedCache
from ..request.facts import MAX_KEY_BYTES
from .index import IndexedRule, RouteIndex
from .params import Param, ParamRule, compile_param
from .rule import RouteRule

__all__ = [
    "ParamRule",
    "Route",
    "RouteTable",
    "canonical_host",
    "compile_glob",
    "normalise_path",
    "path_spellings",
]

_MEMO_ENTRIES: Final = 4096
_MEMO_BYTES: Final = 1 << 20  # keys are client-controlled: bound what a flood of long paths can pin


def compile_glob(pattern: str) -> str:
    """Regex source for a path glob: ``*`` is one segment (or part of one), ``**`` any number of segments."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def normalise_path(path: str) -> str:
    """The canonical spelling of *path*: ``//`` collapsed, ``.`` and ``..`` resolved, no trailing slash."""
    if path.startswith("/") and "//" not in path and "/." not in path and (len(path) == 1 or path[-1] != "/"):
        return path
    return posixpath.normpath("/" + path.lstrip("/"))  # normpath keeps a leading "//": strip it first


def path_spellings(path: str, root_path: str = "") -> tuple[str, ...]:
    """Every path the app might route for ASGI *path* and *root_path*, the likeliest (canonical app path) first.

    Servers include ``root_path`` in ``path`` (uvicorn ``--root-path``, Starlette ``Mount``) and frameworks
    route the remainder; older servers leave it out, and then the path is the app's as given.
    """
    app = path
    root = root_path.rstrip("/")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        app = path[len(root) :] or "/"
    spellings = [normalise_path(app), app, normalise_path(path), path]
    if root and root in path:  # Litestar routes what follows the root path's first occurrence *anywhere*
        rest = path.split(root, 1)[1]  # (hypercorn leaves the root path out of path: /x/api/v1 -> /v1)
        rest = rest if rest.startswith("/") else "/" + rest
        spellings += [normalise_path(rest), rest]
    return tuple(dict.fromkeys(spellings))


def canonical_host(host: str) -> str:
    """``API.Example.COM.:8443`` -> ``api.example.com``; ``[::1]:8443`` -> ``[::1]``."""
    return _without_port(host).lower().rstrip(".")


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]  # an unclosed literal becomes "": it names no rule's host
    return host.partition(":")[0]


def _host_spellings(host: str) -> tuple[str, ...]:
    """Canonical first; then as sent (less the port), for apps that match hosts case-sensitively."""
    if " " in host:  # not a host; and a space would blur the fields of the matched subject
        return ("",)
    return tuple(dict.fromkeys((canonical_host(host), _without_port(host))))


class Route(NamedTuple):
    """How a request is classified before its parameters are read.

    ``params`` is set when the class depends on the body, query string or a header: finish with
    ``params.classify(...)``; until then ``export_class`` is the first parameter rule's own class (the
    fail-closed answer). ``exempt`` names the ``[exempt] paths`` entry that matched, set only when every
    spelling is exempt. ``also`` holds the classifications of the other spellings the app might route, when
    they differ: the request must pass every one.
    """

    export_class: str
    rule: RouteRule | None
    params: ParamRule | None
    exempt: str | None
    also: tuple[Route, ...] = ()

    def describe(self) -> str:
        return self.rule.describe() if self.rule else "no route matches: default class"


class RouteTable:
    """All route rules and exempt paths, compiled. :meth:`classify` is what runs per request."""

    __slots__ = (
        "_exempt",
        "_exempt_globs",
        "_index",
        "_memo",
        "_needs",
        "_params",
        "_rules",
        "_singles",
        "default_class",
    )

    def __init__(self, rules: Sequence[RouteRule], default_class: str, exempt_paths: Sequence[str] = ()) -> None:
        self._rules = tuple(rules)
        self.default_class = default_class
        self._params: tuple[Param, ...] = tuple(compile_param(rule) for rule in self._rules)
        self._needs = (  # read per request by the middleware: computed once
            any(rule.host for rule in self._rules),
            any(p.source == "query" for p in self._params),
            any(p.source == "header" for p in self._params),
        )
        indexed = [
            IndexedRule(r.path, r.methods, r.host and canonical_host(r.host), _rule_regex(r)) for r in self._rules
        ]
        self._index = RouteIndex(indexed)
        # DOTALL: a path may carry a newline (%0A); `.` must match it, or "/x/**" would miss "/x/y%0A".
        self._singles = tuple(re.compile(entry.regex, re.DOTALL) for entry in indexed)
        self._exempt_globs = tuple(exempt_paths)
        self._exempt = (
            re.compile("|".join(f"(?P<e{i}>{compile_glob(g)})" for i, g in enumerate(exempt_paths)), re.DOTALL)
            if exempt_paths
            else None
        )
        self._memo: BoundedCache[tuple[str, str, str, str], Route] = BoundedCache(
            _MEMO_ENTRIES, _MEMO_BYTES, max_item_bytes=MAX_KEY_BYTES
        )

    @property
    def rules(self) -> tuple[RouteRule, ...]:
        return self._rules

    @property
    def exempt_paths(self) -> tuple[str, ...]:
        return self._exempt_globs

    @property
    def needs_host(self) -> bool:
        """Some rule names a host: the caller must pass the Host header."""
        return self._needs[0]

    @property
    def needs_query(self) -> bool:
        """Some rule reads a query parameter."""
        return self._needs[1]

    @property
    def needs_headers(self) -> bool:
        """Some rule reads a request header."""
        return self._needs[2]

    def classify(self, method: str, host: str, path: str, root_path: str = "") -> Route:
        """Classify a request by method, Host header, ASGI path and root_path, every spelling (memoised)."""
        key = (method, host, path, root_path)
        found = self._memo.get(key)
        if found is None:
            found = self._classify_all(method.upper(), host, path, root_path)
            self._memo.put(key, found, len(method) + len(host) + len(path) + len(root_path))
        return found

    def _classify_all(self, method: str, host: str, path: str, root_path: str) -> Route:
        paths = path_spellings(path, root_path)
        routes = [self._classify(method, h, p) for h in _host_spellings(host) for p in paths]
        first = routes[0]
        if all(r.exempt is not None for r in routes):
            return first  # exempt whatever the class: nothing else to pass
        seen = {first[:3]}
        also = []
        for route in routes[1:]:
            if route[:3] not in seen:
                seen.add(route[:3])
                also.append(route._replace(exempt=None))
        return first._replace(exempt=None, also=tuple(also))

    def _classify(self, method: str, host: str, path: str) -> Route:
        """One spelling: the first matching rule, and the later ones that match too if it reads a parameter.

        Only the rules the index finds for the path are tried (in rule order): no other can match while *host*
        holds no space, as :func:`_host_spellings` makes sure."""
        exempt = None
        if self._exempt is not None and (hit := self._exempt.fullmatch(path)) and hit.lastgroup:
            exempt = f"path matches exempt {self._exempt_globs[int(hit.lastgroup[1:])]}"
        subject = f"{method} {host} {path}"
        found = self._index.candidates(method, path)
        first = found.first(subject)
        if first is None:
            return Route(self.default_class, None, None, exempt)
        rule = self._rules[first]
        if self._params[first].source == "":
            return Route(rule.export_class, rule, None, exempt)
        candidates = [self._params[first]]
        for i in found.rules:  # every rule that can match is among them: the later ones, in order
            if i > first and self._singles[i].fullmatch(subject):
                candidates.append(self._params[i])
                if self._params[i].source == "":
                    break
        return Route(rule.export_class, rule, ParamRule(tuple(candidates), self.default_class), exempt)


def _rule_regex(rule: RouteRule) -> str:
    methods = "|".join(re.escape(m) for m in rule.methods) if rule.methods else r"[^ ]+"
    host = (
        "".join("[^ ./]*" if c == "*" else re.escape(c) for c in canonical_host(rule.host)) if rule.host else r"[^ ]*"
    )
    path = rule.path
    # Requests are also matched in canonical form (no trailing slash): a rule written with one matches both.
    glob = compile_glob(path[:-1]) + "/?" if len(path) > 1 and path.endswith("/") else compile_glob(path)
    return f"(?:{methods}) {host} {glob}"
