"""One ``[[routes]]`` entry as the policy loader validated it, and the checks its strings must pass.

The ground of routing: the compiled parameter tests (``params.py``) and the route table (``routes.py``) are
built from :class:`RouteRule` values, so neither needs the other to describe a rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_BODY", "WILDCARD", "RouteRule", "Step", "param_problems", "parse_field"]

DEFAULT_MAX_BODY: Final = 1 << 20
WILDCARD: Final = None  # the ``[*]`` step of a field path

Step = str | int | None
_FIELD: Final = re.compile(r"(?:[^.\[\]]+|\[(?:\*|\d+)\])(?:\.[^.\[\]]+|\[(?:\*|\d+)\])*")
_STEP: Final = re.compile(r"([^.\[\]]+)|\[(\*|\d+)\]")
_HEADER_NAME: Final = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_HOST_GLOB: Final = re.compile(r"[a-z0-9_*-]+(?:\.[a-z0-9_*-]+)*|\[[0-9a-f:.]+\]")


def parse_field(text: str) -> tuple[Step, ...]:
    """``"requests[*].params.model"`` -> ``("requests", None, "params", "model")``; ValueError if malformed."""
    if not _FIELD.fullmatch(text):
        raise ValueError(f"{text!r} is not a JSON field path (names joined by '.', array elements as [N] or [*])")
    return tuple(name if name else (WILDCARD if index == "*" else int(index)) for name, index in _STEP.findall(text))


def param_problems(rule: RouteRule) -> list[tuple[str, str]]:
    """(key, message) for each way *rule*'s parameter keys cannot be compiled; key "" is the rule itself."""
    found: list[tuple[str, str]] = []
    sources = [key for key in ("json_field", "query_param", "header") if getattr(rule, key) is not None]
    if len(sources) > 1:
        found.append(("", f"{' and '.join(sources)} exclude each other: a rule reads one parameter"))
    elif sources and not (rule.equals or rule.matches):
        found.append(("", f"{sources[0]} needs equals or matches"))
    elif not sources and (rule.equals or rule.matches):
        found.append(("", "equals/matches need json_field, query_param or header"))
    if rule.json_field is not None:
        try:
            parse_field(rule.json_field)
        except ValueError as exc:
            found.append(("json_field", str(exc)))
    if rule.header is not None and not _HEADER_NAME.fullmatch(rule.header.lower()):
        found.append(("header", f"{rule.header!r} is not an HTTP header name"))
    if rule.query_param == "":
        found.append(("query_param", "must not be empty"))
    return found


@dataclass(frozen=True)
class RouteRule:
    """One ``[[routes]]`` entry, as validated by the policy loader."""

    path: str
    export_class: str
    methods: tuple[str, ...] = ()
    host: str | None = None
    json_field: str | None = None
    query_param: str | None = None
    header: str | None = None
    equals: tuple[str, ...] = ()
    matches: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    index: int = 0

    def describe(self) -> str:
        method = "|".join(self.methods) or "*"
        where = f"{self.host}" if self.host else ""
        sources = (("JSON", self.json_field), ("query", self.query_param), ("header", self.header))
        param = next((f" with {label} {name}" for label, name in sources if name is not None), "")
        return f"routes[{self.index}] {method} {where}{self.path}{param} -> {self.export_class}"

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each string of this rule that cannot be compiled; key "" is the rule itself."""
        found = []
        if "//" in self.path or any(seg in (".", "..") for seg in self.path.split("/")):
            found.append(("path", f"{self.path!r} has empty, '.' or '..' segments: requests match in canonical form"))
        if self.host is not None and not _HOST_GLOB.fullmatch(self.host.lower().rstrip(".")):
            found.append(("host", f"{self.host!r} is not a host name (no port; `*` is one label; IDNs as xn--)"))
        return found + param_problems(self)
