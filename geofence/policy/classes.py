"""Export classes in the policy file: ``[classes.NAME]`` validated and compiled into :class:`ClassPolicy`
values with flat destination and nationality sets (groups expanded once, at load)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..places import GroupResolver
from .checks import Checker

__all__ = [
    "MODES",
    "AnonymizerRule",
    "ClassPolicy",
    "Mode",
    "NationalityRule",
    "PersonKind",
    "PersonRule",
    "RepresentedCountryRule",
    "UnknownLocationRule",
    "compile_class",
]

Mode = Literal["enforce", "report"]
"""``enforce`` denies; ``report`` decides and records but lets the request through."""
MODES: Final[tuple[Mode, ...]] = ("enforce", "report")
PersonKind = Literal["any", "us_only", "nationalities"]
NationalityRule = Literal["all", "most_recent"]
AnonymizerRule = Literal["deny", "allow"]
UnknownLocationRule = Literal["deny", "allow"]
RepresentedCountryRule = Literal["check", "ignore"]


@dataclass(frozen=True, slots=True)
class PersonRule:
    """Who may receive a class: ``any``, ``us_only``, or nationality lists."""

    kind: PersonKind
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    rule: NationalityRule = "all"  # "all": every citizenship and permanent residence; "most_recent": EAR 734.13(b)
    check_us_persons: bool = False


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """One export class, compiled: flat destination sets and the person rule."""

    name: str
    description: str
    allow: frozenset[str] | None
    deny: frozenset[str]
    persons: PersonRule
    anonymizers: AnonymizerRule
    unknown_location: UnknownLocationRule
    represented_country: RepresentedCountryRule
    mode: Mode

    @property
    def restricted(self) -> bool:
        """False for a class that allows everyone everywhere (it can deny nobody)."""
        return bool(
            self.allow is not None
            or self.deny
            or self.persons.kind != "any"
            or self.anonymizers == "deny"
            or self.unknown_location == "deny"
        )


_CLASS_KEYS: Final = (
    "description",
    "allow_destinations",
    "deny_destinations",
    "persons",
    "anonymizers",
    "unknown_location",
    "represented_country",
    "mode",
)
_PERSON_KEYS: Final = ("allow_nationalities", "deny_nationalities", "rule", "check_us_persons")


def compile_class(
    name: str, raw: Any, default_mode: Mode, resolver: GroupResolver, check: Checker, errors: list[str]
) -> ClassPolicy | None:
    path = f'classes."{name}"' if not re.fullmatch(r"[A-Za-z0-9_-]+", name) else f"classes.{name}"
    table = check.table(raw, path, _CLASS_KEYS)
    if not isinstance(raw, dict):
        return None
    allow = None
    if "allow_destinations" in table:
        allow = resolver.expand(
            check.strings(table["allow_destinations"], f"{path}.allow_destinations"),
            errors,
            f"{path}.allow_destinations",
        )
    deny = resolver.expand(
        check.strings(table.get("deny_destinations"), f"{path}.deny_destinations"), errors, f"{path}.deny_destinations"
    )
    persons = _persons(table.get("persons", "any"), f"{path}.persons", resolver, check, errors)
    return ClassPolicy(
        name=name,
        description=check.string(table.get("description"), f"{path}.description") or "",
        allow=allow,
        deny=deny,
        persons=persons,
        anonymizers=check.choice(table.get("anonymizers"), f"{path}.anonymizers", ("deny", "allow"), "allow"),
        unknown_location=check.choice(
            table.get("unknown_location"), f"{path}.unknown_location", ("deny", "allow"), "deny"
        ),
        represented_country=check.choice(
            table.get("represented_country"), f"{path}.represented_country", ("check", "ignore"), "check"
        ),
        mode=check.choice(table.get("mode"), f"{path}.mode", MODES, default_mode),
    )


def _persons(raw: Any, path: str, resolver: GroupResolver, check: Checker, errors: list[str]) -> PersonRule:
    if isinstance(raw, str):
        # an invalid value is reported; compile the strict choice
        return PersonRule(check.choice(raw, path, ("any", "us_only"), "us_only"))
    table = check.table(raw, path, _PERSON_KEYS)
    if not isinstance(raw, dict):
        return PersonRule("us_only")
    if "allow_nationalities" not in table and "deny_nationalities" not in table:
        check.error(path, 'needs allow_nationalities or deny_nationalities (or use "any" / "us_only")')
    allow = None
    if "allow_nationalities" in table:
        names = check.strings(table["allow_nationalities"], f"{path}.allow_nationalities")
        allow = resolver.expand(names, errors, f"{path}.allow_nationalities")
    deny = resolver.expand(
        check.strings(table.get("deny_nationalities"), f"{path}.deny_nationalities"),
        errors,
        f"{path}.deny_nationalities",
    )
    for code in sorted((allow or frozenset()) | deny):
        if "-" in code:
            check.error(path, f"nationality lists take countries, not subdivisions ({code})")
    check_us = table.get("check_us_persons", False)
    if not isinstance(check_us, bool):
        check.error(f"{path}.check_us_persons", "must be true or false")
        check_us = True
    return PersonRule(
        "nationalities",
        allow=allow,
        deny=deny,
        rule=check.choice(table.get("rule"), f"{path}.rule", ("all", "most_recent"), "all"),
        check_us_persons=check_us,
    )
