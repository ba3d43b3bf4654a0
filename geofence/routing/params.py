"""Parameter rules: routes decided by the JSON body, the query string or a request header.

AI APIs name the model in the request rather than the path: in the JSON body (``model``, or
``requests[*].params.model`` for a batch), in the query string (a WebSocket handshake), or in a header. A route
rule that reads one of these can only be decided once the request is seen, so :class:`ParamRule` finishes what
the path started. Whatever cannot be read the way the app would read it — a body that is not JSON or too large,
a key or parameter given twice, a query string that ``;`` splits differently — is classified as the rule's own
class: fail closed. A parameter that is absent means the rule does not match, and the next one decides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Final
from urllib.parse import parse_qsl

from .rule import WILDCARD, RouteRule, Step, parse_field

__all__ = ["Param", "ParamRule", "compile_param"]

_SHOWN: Final = 80  # characters of a matched value quoted in an explanation


@dataclass(frozen=True, slots=True)
class Param:
    """One route rule compiled for parameter matching; ``source`` "" for a rule that reads no parameter."""

    rule: RouteRule
    source: str  # "json" | "query" | "header" | ""
    name: str
    steps: tuple[Step, ...] = ()
    pattern: re.Pattern[str] | None = None  # the ``matches`` globs, one alternation over the casefolded value

    def accepts(self, value: object) -> bool:
        rule = self.rule
        if not isinstance(value, str):
            return False
        return value in rule.equals or (self.pattern is not None and self.pattern.match(value.casefold()) is not None)


def compile_param(rule: RouteRule) -> Param:
    """Compile *rule*'s parameter test once, when the route table is built."""
    pattern = re.compile("|".join(translate(p.casefold()) for p in rule.matches)) if rule.matches else None
    if rule.json_field is not None:
        return Param(rule, "json", rule.json_field, parse_field(rule.json_field), pattern)
    if rule.query_param is not None:
        return Param(rule, "query", rule.query_param, (), pattern)
    if rule.header is not None:
        return Param(rule, "header", rule.header.lower(), (), pattern)
    return Param(rule, "", "")


class _Request:
    """What one request offers parameter rules, each part parsed at most once and only if a rule asks."""

    __slots__ = ("_document", "_duplicates", "_headers", "_problem", "_query", "body", "headers", "query_string")

    def __init__(self, body: bytes | None, query_string: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.body, self.query_string, self.headers = body, query_string, headers
        self._document: Any = None
        self._duplicates: set[str] | None = None
        self._problem: str | None = None
        self._query: tuple[list[tuple[str, str]], list[tuple[str, str]] | None] | None = None
        self._headers: dict[bytes, list[bytes]] | None = None

    def json(self, param: Param) -> tuple[list[Any], str | None]:
        """The values at *param*'s field path, or a problem that fails the rule closed."""
        if self._duplicates is None:
            self._parse_json()
        if self._problem is not None:
            return [], self._problem
        assert self._duplicates is not None
        twice = sorted(self._duplicates.intersection(s for s in param.steps if isinstance(s, str)))
        if twice:  # parsers disagree on which copy wins
            return [], f"JSON body names {twice[0]!r} twice"
        first = param.steps[0]
        if not isinstance(self._document, dict if isinstance(first, str) else list):
            return [], f"JSON body is not {'an object' if isinstance(first, str) else 'an array'}"
        nodes = [self._document]
        for step in param.steps:
            found: list[Any] = []
            for node in nodes:
                if isinstance(step, str):
                    if isinstance(node, dict) and step in node:
                        found.append(node[step])
                elif isinstance(node, list):
                    if step is WILDCARD:
                        found.extend(node)
                    elif step < len(node):
                        found.append(node[step])
            nodes = found
        return nodes, None

    def _parse_json(self) -> None:
        duplicates: set[str] = set()

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            obj = dict(items)
            if len(obj) != len(items):
                seen: set[str] = set()
                for key, _ in items:
                    if key in seen:
                        duplicates.add(key)
                    seen.add(key)
            return obj

        self._duplicates = duplicates
        try:
            self._document = json.loads(self.body or b"", object_pairs_hook=pairs)
        except (ValueError, RecursionError):
            self._problem = "body is not valid JSON"

    def query(self, name: str) -> tuple[list[str], str | None]:
        """The values of query parameter *name* as frameworks parse it (``parse_qsl``, blanks kept)."""
        if self._query is None:
            text = self.query_string.decode("latin-1")
            pairs = parse_qsl(text, keep_blank_values=True)
            # Some frameworks also split on ';': a name that reads differently that way is ambiguous.
            semi = parse_qsl(text.replace(";", "&"), keep_blank_values=True) if ";" in text else None
            self._query = (pairs, semi)
        pairs, semi = self._query
        values = [v for k, v in pairs if k == name]
        if semi is not None and [v for k, v in semi if k == name] != values:
            return [], f"query parameter {name!r} reads differently when ';' separates parameters"
        if len(values) > 1:
            return [], f"query parameter {name!r} given {len(values)} times"
        return values, None

    def header(self, name: str) -> tuple[list[str], str | None]:
        """The value of header *name*; a header given twice is ambiguous (frameworks keep the first or last)."""
        if self._headers is None:
            self._headers = {}
            for key, value in self.headers:
                self._headers.setdefault(key.lower(), []).append(value)
        values = self._headers.get(name.encode("latin-1"), [])
        if len(values) > 1:
            return [], f"header {name!r} given {len(values)} times"
        return [v.decode("latin-1").strip() for v in values], None


@dataclass(frozen=True, slots=True)
class ParamRule:
    """The rules matching a request's method, host and path, from the first that reads a parameter up to the
    first later rule that reads none; ``default`` applies when none matches. Replaces reading a rule's
    parameter on its own: a miss falls through to the next candidate, as first-match-wins requires."""

    candidates: tuple[Param, ...]
    default: str
    needs_body: bool = field(init=False, compare=False)
    max_body_bytes: int = field(init=False, compare=False)
    """How much body to buffer: the largest limit of the candidates that read it (0 if none does)."""

    def __post_init__(self) -> None:
        limits = [p.rule.max_body_bytes for p in self.candidates if p.source == "json"]
        object.__setattr__(self, "needs_body", bool(limits))
        object.__setattr__(self, "max_body_bytes", max(limits, default=0))

    def classify(
        self, body: bytes | None, query_string: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[str, str]:
        """(export class, explanation). *body* None means it was too large or unreadable: fail closed."""
        request = _Request(body, query_string, headers)
        for param in self.candidates:
            rule = param.rule
            if param.source == "":
                return rule.export_class, f"parameters match no earlier rule; {rule.describe()}"
            if param.source == "json":
                if body is None or len(body) > rule.max_body_bytes:
                    return rule.export_class, f"body over {rule.max_body_bytes} bytes: fail closed to {rule.describe()}"
                values, problem = request.json(param)
                where = f"JSON {param.name}"
            elif param.source == "query":
                values, problem = request.query(param.name)
                where = f"query {param.name}"
            else:
                values, problem = request.header(param.name)
                where = f"header {param.name}"
            if problem is not None:
                return rule.export_class, f"{problem}: fail closed to {rule.describe()}"
            for value in values:
                if param.accepts(value):
                    return rule.export_class, f"{where} = {str(value)[:_SHOWN]!r}: {rule.describe()}"
        return self.default, "parameters match no rule: default class"
