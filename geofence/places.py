"""Destinations: ISO country and subdivision codes, country groups, and the territory map.

A policy names destinations as ISO 3166-1 alpha-2 codes (``CU``), ISO 3166-2 subdivision codes (``UA-43``) or
groups (``group:E:1``, ``embargoed``, an operator's ``allies``). This module checks every name against
``pycountry`` (with a suggestion for a typo) and expands groups into flat sets of codes, once, at load time.

The reference groups ship in ``data/country-groups.toml`` (15 CFR Part 740 Supp. 1 country groups, the Part 746
embargoes, a territory map), each with its source and as-of date. They are defaults, not legal advice.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, Final

import pycountry

from .resources import data_path

__all__ = ["ReferenceData", "country_name", "load_reference", "suggest_code"]

REFERENCE_FILE: Final = "country-groups.toml"
EMBARGOED: Final = "embargoed"
_GROUP_PREFIX: Final = "group:"
_SUBDIVISION: Final = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
# ISO 3166-1 user-assigned codes in common use by GeoIP vendors and the EAR, which pycountry does not list.
_EXTRA_COUNTRIES: Final = {"XK": "Kosovo"}


@dataclass(frozen=True)
class ReferenceData:
    """The bundled (or an operator-supplied) reference file, parsed."""

    groups: Mapping[str, frozenset[str]]
    """Country groups by name (``A:1`` … ``E:2``) plus ``embargoed``."""
    territories: Mapping[str, str]
    """Territory -> the state whose entry governs it (``HK`` -> ``CN``, ``PR`` -> ``US``)."""
    as_of: date | None
    """The newest as-of date among the groups: what a decision's policy version rests on."""
    source: str


def _is_country(code: str) -> bool:
    return code in _EXTRA_COUNTRIES or pycountry.countries.get(alpha_2=code) is not None


def is_country(code: str) -> bool:
    """True for an ISO 3166-1 alpha-2 code (upper case)."""
    return len(code) == 2 and code.isalpha() and code.isupper() and _is_country(code)


def is_subdivision(code: str) -> bool:
    """True for an ISO 3166-2 code with its country prefix (``UA-43``)."""
    return bool(_SUBDIVISION.fullmatch(code)) and pycountry.subdivisions.get(code=code) is not None  # type: ignore[no-untyped-call]


def country_name(code: str) -> str:
    if code in _EXTRA_COUNTRIES:
        return _EXTRA_COUNTRIES[code]
    country = pycountry.countries.get(alpha_2=code)
    return getattr(country, "common_name", None) or country.name if country else code


@cache
def _names() -> dict[str, str]:
    """Lower-case country names (official, short and common) -> alpha-2, for fuzzy suggestions."""
    names = {name.lower(): code for code, name in _EXTRA_COUNTRIES.items()}
    for country in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            if value := getattr(country, attr, None):
                names[value.lower()] = country.alpha_2
    return names


def suggest_code(text: str, extra: Iterable[str] = ()) -> str | None:
    """The most likely meant code for a misspelt destination, as ``"IR (Iran)"``, or None."""
    candidate = text.strip()
    found = None
    if len(candidate) == 3 and candidate.isalpha():
        found = pycountry.countries.get(alpha_3=candidate.upper())
    if found is None and len(candidate) > 3:
        try:
            found = pycountry.countries.lookup(candidate)
        except LookupError:
            found = None
    if found is not None:
        return f"{found.alpha_2} ({country_name(found.alpha_2)})"
    upper = candidate.upper()
    if upper != candidate and (is_country(upper) or is_subdivision(upper)):
        return upper if not is_country(upper) else f"{upper} ({country_name(upper)})"
    extra = list(extra)
    squashed = {e.lower().removeprefix(_GROUP_PREFIX).replace(":", ""): e for e in extra}
    if (exact := squashed.get(candidate.lower().removeprefix(_GROUP_PREFIX).replace(":", ""))) is not None:
        return exact
    close = difflib.get_close_matches(candidate.lower().removeprefix(_GROUP_PREFIX), list(squashed), n=1, cutoff=0.7)
    if close:
        return squashed[close[0]]
    close = difflib.get_close_matches(candidate.lower(), list(_names()), n=1, cutoff=0.75)
    if close:
        code = _names()[close[0]]
        return f"{code} ({country_name(code)})"
    return None


def load_reference(path: Path | None = None) -> ReferenceData:
    """Parse a reference file in the format of ``data/country-groups.toml``."""
    path = path or data_path(REFERENCE_FILE)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    groups: dict[str, frozenset[str]] = {}
    dates: list[date] = []
    for name, group in raw.get("country_groups", {}).items():
        groups[name] = frozenset(group["members"])
        if isinstance(group.get("as_of"), date):
            dates.append(group["as_of"])
    embargoed: set[str] = set()
    for entry in raw.get("embargoed", {}).values():
        if entry.get("block_default"):
            embargoed.update(entry.get("iso_3166_2") or [entry["iso_3166_1"]])
    groups[EMBARGOED] = frozenset(embargoed)
    meta = raw.get("embargoed_meta", {})
    if isinstance(meta.get("as_of"), date):
        dates.append(meta["as_of"])
    territories = {code: parent for code, parent in raw.get("territories", {}).items() if parent}
    return ReferenceData(groups, territories, max(dates) if dates else None, str(path))


@dataclass(frozen=True)
class GroupResolver:
    """Expands destination names to flat code sets, with operator groups layered over the reference groups."""

    groups: Mapping[str, Any]
    """Name -> list of destination names (operator) or frozenset of codes (reference)."""

    def expand(self, names: Iterable[str], errors: list[str], where: str) -> frozenset[str]:
        out: set[str] = set()
        for name in names:
            out |= self._expand_one(name, errors, where, ())
        return frozenset(out)

    def _expand_one(self, name: Any, errors: list[str], where: str, stack: tuple[str, ...]) -> frozenset[str]:
        if not isinstance(name, str):
            errors.append(f"{where}: {name!r} is not a destination name")
            return frozenset()
        group = name[len(_GROUP_PREFIX) :] if name.startswith(_GROUP_PREFIX) else None
        if group is None and is_country(name):
            return frozenset({name})
        if group is None and _SUBDIVISION.fullmatch(name):
            if is_subdivision(name):
                return frozenset({name})
            errors.append(f"{where}: {name!r} is not an ISO 3166-2 subdivision code")
            return frozenset()
        key = group if group is not None else name
        if key in self.groups:
            if key in stack:
                errors.append(f"{where}: group {key!r} includes itself ({' -> '.join((*stack, key))})")
                return frozenset()
            members = self.groups[key]
            if isinstance(members, frozenset):
                return members
            out: set[str] = set()
            for member in members:
                out |= self._expand_one(member, errors, f"groups.{key}", (*stack, key))
            return frozenset(out)
        hint = suggest_code(name, [f"group:{g}" for g in self.groups])
        if group is not None:
            choices = ", ".join(sorted(self.groups))
            errors.append(f"{where}: unknown group {group!r} (known: {choices})")
        else:
            errors.append(f"{where}: unknown destination {name!r}" + (f"; did you mean {hint}?" if hint else ""))
        return frozenset()
