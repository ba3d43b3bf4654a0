"""Policy validation helpers: typed reads of TOML values that collect every problem instead of stopping.

Shared by the policy loader and the ``[identity]`` token settings, so every section reports problems the same
way (key path + message, with the nearest valid key suggested).
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple, TypeVar

from ..network.addresses import parse_network

__all__ = ["Checker", "Problem", "keys_of", "kind"]

C = TypeVar("C", bound=str)


class Problem(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def table(self, value: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a table, not {kind(value)}")
            return {}
        for key in value:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(keys)})"
                self.error(f"{path}.{key}" if path else key, f"unknown key{hint}")
        return value

    def string(self, value: Any, path: str, choices: tuple[str, ...] = ()) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, not {kind(value)}")
            return None
        if choices and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(path, f"{value!r} is not one of {', '.join(map(repr, choices))}{hint}")
            return None
        return value

    def choice(self, value: Any, path: str, choices: tuple[C, ...], default: C) -> C:
        """One of *choices* — typed as their ``Literal`` — or *default* when absent or invalid (reported)."""
        if self.string(value, path, choices) is None:
            return default
        return next(c for c in choices if c == value)

    def strings(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(path, "must be a list of strings")
            return []
        return value

    def integer(self, value: Any, path: str, minimum: int = 1) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.error(path, f"must be an integer >= {minimum}")
            return None
        return value

    def networks(self, value: Any, path: str, allow_unix: bool = False) -> list[tuple[int, int, str]]:
        out = []
        for i, text in enumerate(self.strings(value, path)):
            if allow_unix and text == "unix":
                out.append((0, -1, text))  # matches no address; the middleware reads it as "trust Unix sockets"
                continue
            try:
                out.append(parse_network(text))
            except ValueError as exc:
                self.error(f"{path}[{i}]", str(exc))
        return out


def keys_of(value: Any) -> tuple[str, ...]:
    """Every key of a table (all valid): for tables whose keys the operator names (groups, classes)."""
    return tuple(value) if isinstance(value, dict) else ()


def kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )
