"""Route rules -> export class.

Rules are tried in order and the first match wins. All rules are compiled into one regular expression over
``"METHOD host path"``, so matching costs one C-level regex match whatever the number of rules, and results
are memoised per (method, host, path).

A rule with ``json_field`` also looks into the JSON request body (AI APIs name the model there). Such a rule
can only be decided once the body is read, so :meth:`RouteTable.classify` returns a :class:`BodyRule` to
finish with :meth:`BodyRule.classify`. A body that is malformed, too large, or names the field twice is
classified as the rule's own class: fail closed.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, NamedTuple

__all__ = ["BodyRule", "Route", "RouteRule", "RouteTable", "compile_glob", "normalise_path"]

DEFAULT_MAX_BODY: Final = 1 << 20
_MEMO_LIMIT: Final = 4096


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
    """Collapse ``//``, ``.`` and ``..`` so a request cannot dodge a rule by spelling the path differently."""
    if "//" not in path and "/." not in path:
        return path
    trailing = path.endswith("/") and len(path) > 1
    normal = posixpath.normpath("/" + path.lstrip("/"))
    normal = "/" + normal.lstrip("/")
    return normal + "/" if trailing and normal != "/" else normal


@dataclass(frozen=True)
class RouteRule:
    """One ``[[routes]]`` entry, as validated by the policy loader."""

    path: str
    export_class: str
    methods: tuple[str, ...] = ()
    host: str | None = None
    json_field: str | None = None
    equals: tuple[str, ...] = ()
    matches: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    index: int = 0

    def describe(self) -> str:
        method = "|".join(self.methods) or "*"
        where = f"{self.host}" if self.host else ""
        body = f" with JSON {self.json_field}" if self.json_field else ""
        return f"routes[{self.index}] {method} {where}{self.path}{body} -> {self.export_class}"


@dataclass(frozen=True)
class BodyRule:
    """The rules that match a request's method, host and path, when the first of them needs the body.

    ``candidates`` runs from that first rule up to the first later rule that needs no body; ``default`` applies
    when none matches.
    """

    candidates: tuple[RouteRule, ...]
    default: str

    def classify(self, body: bytes | None) -> tuple[str, str]:
        """(export class, explanation) for *body*; None means the body was too large to buffer."""
        for rule in self.candidates:
            if rule.json_field is None:
                return rule.export_class, f"body does not match earlier rules; {rule.describe()}"
            if body is None or len(body) > rule.max_body_bytes:
                return rule.export_class, f"body over {rule.max_body_bytes} bytes: fail closed to {rule.describe()}"
            value, problem = _field(body, rule.json_field)
            if problem is not None:
                return rule.export_class, f"{problem}: fail closed to {rule.describe()}"
            if isinstance(value, str) and (
                value in rule.equals or any(fnmatchcase(value.casefold(), p) for p in rule.matches)
            ):
                return rule.export_class, f"JSON {rule.json_field} = {value!r}: {rule.describe()}"
        return self.default, "body matches no rule: default class"


class Route(NamedTuple):
    """How a request is classified before its body is read.

    ``body`` is set when the class depends on the body: finish with ``body.classify(...)``; until then
    ``export_class`` is the first body rule's own class (the fail-closed answer). ``exempt`` names the
    ``[exempt] paths`` entry that matched, if any. ``also`` is the classification of the path's normalised
    spelling when it differs (``//``, ``.`` or ``..`` segments): the app may route either spelling, so the
    request must pass both.
    """

    export_class: str
    rule: RouteRule | None
    body: BodyRule | None
    exempt: str | None
    also: Route | None = None

    def describe(self) -> str:
        return self.rule.describe() if self.rule else "no route matches: default class"


_MISSING: Final = object()


class _Duplicate(Exception):
    pass


def _field(body: bytes, path: str) -> tuple[Any, str | None]:
    """The value at dotted *path* in a JSON object body, or a problem description."""
    first, *rest = path.split(".")
    names = {first, *rest}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen = dict(items)
        if len(seen) != len(items):  # a key on the field's path given twice: parsers disagree on which wins
            for name in names & seen.keys():
                if sum(1 for k, _ in items if k == name) > 1:
                    raise _Duplicate(name)
        return seen

    try:
        document = json.loads(body, object_pairs_hook=pairs)
    except _Duplicate as exc:
        return None, f"JSON body names {exc.args[0]!r} twice"
    except (ValueError, RecursionError):
        return None, "body is not valid JSON"
    node: Any = document
    for part in [first, *rest]:
        if not isinstance(node, dict):
            return (None, "JSON body is not an object") if node is document else (_MISSING, None)
        if part not in node:
            return _MISSING, None
        node = node[part]
    return node, None


class RouteTable:
    """All route rules and exempt paths, compiled. :meth:`classify` is what runs per request."""

    __slots__ = ("_exempt", "_exempt_globs", "_memo", "_pattern", "_rules", "_singles", "default_class")

    def __init__(self, rules: Sequence[RouteRule], default_class: str, exempt_paths: Sequence[str] = ()) -> None:
        self._rules = tuple(rules)
        self.default_class = default_class
        sources = [_rule_regex(rule) for rule in self._rules]
        # One alternation, in rule order: the regex engine returns the first alternative that matches.
        # DOTALL: a path may carry a newline (%0A); `.` must match it, or "/x/**" would miss "/x/y%0A".
        alternation = "|".join(f"(?P<r{i}>{src})" for i, src in enumerate(sources))
        self._pattern = re.compile(alternation, re.DOTALL) if sources else None
        self._singles = tuple(re.compile(src, re.DOTALL) for src in sources)
        self._exempt_globs = tuple(exempt_paths)
        self._exempt = (
            re.compile("|".join(f"(?P<e{i}>{compile_glob(g)})" for i, g in enumerate(exempt_paths)), re.DOTALL)
            if exempt_paths
            else None
        )
        self._memo: dict[tuple[str, str, str], Route] = {}

    @property
    def rules(self) -> tuple[RouteRule, ...]:
        return self._rules

    @property
    def exempt_paths(self) -> tuple[str, ...]:
        return self._exempt_globs

    def classify(self, method: str, host: str, path: str) -> Route:
        """Classify a request by method, host and path (memoised)."""
        key = (method, host, path)
        found = self._memo.get(key)
        if found is None:
            method, host = method.upper(), host.lower().partition(":")[0]
            found = self._classify(method, host, path)
            normal = normalise_path(path)
            if normal != path:
                other = self._classify(method, host, normal)
                if other.exempt is None:
                    found = found._replace(exempt=None)  # exempt only when every spelling is exempt
                if other[:3] != found[:3]:
                    found = found._replace(also=other._replace(exempt=None))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _classify(self, method: str, host: str, path: str) -> Route:
        exempt = None
        if self._exempt is not None and (hit := self._exempt.fullmatch(path)) and hit.lastgroup:
            exempt = f"path matches exempt {self._exempt_globs[int(hit.lastgroup[1:])]}"
        subject = f"{method} {host} {path}"
        match = self._pattern.fullmatch(subject) if self._pattern is not None else None
        if match is None or match.lastgroup is None:
            return Route(self.default_class, None, None, exempt)
        first = int(match.lastgroup[1:])
        rule = self._rules[first]
        if rule.json_field is None:
            return Route(rule.export_class, rule, None, exempt)
        candidates = [rule]
        for later, pattern in zip(self._rules[first + 1 :], self._singles[first + 1 :], strict=True):
            if pattern.fullmatch(subject):
                candidates.append(later)
                if later.json_field is None:
                    break
        return Route(rule.export_class, rule, BodyRule(tuple(candidates), self.default_class), exempt)


def _rule_regex(rule: RouteRule) -> str:
    methods = "|".join(re.escape(m) for m in rule.methods) if rule.methods else r"[^ ]+"
    host = "".join("[^ ./]*" if c == "*" else re.escape(c) for c in rule.host.lower()) if rule.host else r"[^ ]*"
    return f"(?:{methods}) {host} {compile_glob(rule.path)}"
