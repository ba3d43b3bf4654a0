"""Which route rules can match a path: a request tries a handful of rules rather than all of them.

One regular expression alternating over every rule costs time in proportion to the number of rules: the
engine tries each alternative in turn (≈ 400 µs for 1,000 ``**`` rules). But a path can only match a rule
whose glob's literal leading segments it starts with, so rules are filed in a trie under those segments, and
rules whose glob starts with a wildcard at the root. Each node with rules has one alternation of its own
rules, in policy order, compiled when the policy loads (never on the request path, and each rule once: a
node does not repeat its ancestors' rules, so root rules cost no memory per node). A path walks the trie as
far as its own segments go and matches the alternation of each node on the way; the lowest rule number that
matched is the first match in policy order, as one alternation of every rule would have found.

One alternation per node, rather than trying each candidate's own regex in turn: measured faster from two
candidates on (3 candidates: 0.44 µs against 0.49 µs when the last matches, 0.17 µs against 0.40 µs when none
does), and a miss is cheaper even with one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, NamedTuple

__all__ = ["Candidates", "IndexedRule", "RouteIndex", "literal_segments"]


class IndexedRule(NamedTuple):
    """What the index needs of a route rule: its glob, the methods and host it names, its whole regex."""

    path: str
    methods: tuple[str, ...]
    host: str | None  # canonical: as the regex matches it
    regex: str  # over "METHOD host path", no capturing groups


class Candidates(NamedTuple):
    """The rules a path may match: the alternations of the trie nodes on its way (group ``r<i>`` for rule *i*)."""

    patterns: tuple[re.Pattern[str], ...]
    nodes: tuple[tuple[int, ...], ...]
    """Each node's rules, in policy order."""

    def first(self, subject: str) -> int | None:
        """The first rule, in policy order, that matches *subject*."""
        best = None
        for pattern in self.patterns:
            match = pattern.fullmatch(subject)
            if match is not None and match.lastgroup is not None:
                found = int(match.lastgroup[1:])
                if best is None or found < best:
                    best = found
        return best

    @property
    def rules(self) -> tuple[int, ...]:
        """Every rule that can match, in policy order."""
        return tuple(sorted(i for rules in self.nodes for i in rules))


def literal_segments(glob: str) -> tuple[str, ...]:
    """The ``/``-separated segments that every path matching *glob* starts with (read as routes compile it).

    The literal text before the first ``*`` is a prefix of every match; its segments count up to the last
    ``/``, and the last one too when nothing can follow it but ``/`` or the end (``/a/b``, ``/a/b/**``,
    ``/a/b/``) — not in ``/a/b*`` or ``/a/b/**x``, which match ``/a/bx``.
    """
    body = glob[:-1] if len(glob) > 1 and glob.endswith("/") else glob  # the trailing slash is optional
    i = 0
    while i < len(body) and body[i] != "*" and not body.startswith("/**", i):
        i += 1
    parts = body[:i].split("/")
    if i == len(body):
        return tuple(parts)
    if body.startswith("/**", i):  # matches "" or "/...": what follows it decides
        j = i + 3
        while body.startswith("/**", j):
            j += 3
        if j == len(body) or body[j] == "/":
            return tuple(parts)
    return tuple(parts[:-1])


class _Node:
    __slots__ = ("children", "own", "parent", "pattern", "rules")

    def __init__(self, parent: _Node | None) -> None:
        self.children: dict[str, _Node] = {}
        self.parent = parent
        self.rules: list[int] = []
        self.own: tuple[int, ...] = ()
        self.pattern: re.Pattern[str] | None = None  # the alternation of this node's own rules


_NONE: Final = Candidates((), ())


class RouteIndex:
    """Route rules filed by literal leading path segments; :meth:`candidates` is what runs per request."""

    __slots__ = ("_depth", "_everything", "_regexes", "_root")

    def __init__(self, rules: Sequence[IndexedRule]) -> None:
        self._regexes = regexes = tuple(rule.regex for rule in rules)
        self._root = _Node(None)
        nodes = [self._root]
        self._depth = 0
        for i, rule in enumerate(rules):
            node = self._root
            # The path is only the part of "METHOD host path" after the second space if neither the method nor
            # the host can match a space: a rule that can is filed at the root and tried for every path.
            if not any(" " in m for m in rule.methods) and " " not in (rule.host or ""):
                segments = literal_segments(rule.path)
                self._depth = max(self._depth, len(segments))
                for segment in segments:
                    child = node.children.get(segment)
                    if child is None:
                        child = node.children[segment] = _Node(node)
                        nodes.append(child)
                    node = child
            node.rules.append(i)
        for node in nodes:
            if node.rules:
                node.own = tuple(node.rules)
                node.pattern = _compile(regexes, node.own)
        self._everything: Candidates | None = None  # for a method holding a space (no client sends one honestly)

    def candidates(self, method: str, path: str) -> Candidates:
        """Every rule that can match *method* and *path* with a host that holds no space (as routes send)."""
        if " " in method:  # the fields of the subject blur: any rule may match
            if self._everything is None:
                everything = tuple(range(len(self._regexes)))
                self._everything = (
                    Candidates((_compile(self._regexes, everything),), (everything,)) if everything else _NONE
                )
            return self._everything
        node = self._root
        patterns, owns = ([node.pattern], [node.own]) if node.pattern is not None else ([], [])
        for segment in path.split("/", self._depth):  # a last piece holding "/" is deeper than any rule's key
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            if node.pattern is not None:
                patterns.append(node.pattern)
                owns.append(node.own)
        return Candidates(tuple(patterns), tuple(owns)) if patterns else _NONE


def _compile(regexes: tuple[str, ...], rules: tuple[int, ...]) -> re.Pattern[str]:
    # DOTALL: a path may carry a newline (%0A); `.` must match it, or "/x/**" would miss "/x/y%0A".
    return re.compile("|".join(f"(?P<r{i}>{regexes[i]})" for i in rules), re.DOTALL)
