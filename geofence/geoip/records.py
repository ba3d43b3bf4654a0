"""Database records -> :class:`Facts`: the few values a decision reads, validated and normalised, for each
schema geofence reads (GeoIP2 / GeoLite2 / DB-IP, the anonymous-IP databases, the flat ip-location-db files).

Records are read with the ``maxminddb`` C extension and adapted here with plain dict access: ``geoip2`` model
objects cost 15-25 µs each, which is most of a request's budget. A malformed record is a
:class:`~geofence.errors.DatabaseError`, never a silently missing fact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from ..errors import DatabaseError
from .location import Anonymizer

__all__ = ["NO_FACTS", "SCHEMAS", "Facts", "geoip2_facts", "geoip2_key", "schema_of_record", "short"]

# Record keys that say an address is an anonymizer, in MaxMind's naming (Anonymous IP, Anonymous Plus,
# Enterprise/Insights ``traits``). ``is_anonymous_proxy`` is the legacy City/Country flag for public proxies.
_ANONYMIZER_KEYS: Final = (
    "is_anonymous_vpn",
    "is_tor_exit_node",
    "is_hosting_provider",
    "is_public_proxy",
    "is_residential_proxy",
    "is_anonymous_proxy",
)
_FULL_ANONYMIZER_KEYS: Final = _ANONYMIZER_KEYS[:-1]
_UNKNOWN_COUNTRIES: Final = frozenset({"ZZ", "XX", "--"})
_SUBDIVISION_CODE: Final = re.compile(r"([A-Z]{2}-)?[A-Z0-9]{1,3}")


class Facts(NamedTuple):
    """What one database record says, already normalised (ISO codes upper case, subdivisions prefixed)."""

    country: str | None = None
    registered_country: str | None = None
    represented_country: str | None = None
    represented_country_type: str | None = None
    subdivisions: tuple[str, ...] = ()
    anonymizer: Anonymizer | None = None


NO_FACTS: Final = Facts()


def _country_code(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value in _UNKNOWN_COUNTRIES:
            return None
        if len(value) == 2 and value.isascii() and value.isalpha():
            code = value.upper()
            return None if code in _UNKNOWN_COUNTRIES else code
    raise DatabaseError(f"{where}: {short(value)} is not an ISO 3166-1 alpha-2 country code")


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


_ANONYMIZERS: Final[dict[tuple[bool, ...], Anonymizer]] = {}


def _anonymizer(flags: Mapping[str, Any], where: str) -> Anonymizer:
    for name in _ANONYMIZER_KEYS:
        if name in flags and not isinstance(flags[name], bool):
            raise DatabaseError(f"{where}: anonymizer flag {name} is {short(flags[name])}, not true or false")
    key = (
        flags.get("is_anonymous_vpn", False),
        flags.get("is_tor_exit_node", False),
        flags.get("is_hosting_provider", False),
        flags.get("is_public_proxy", False) or flags.get("is_anonymous_proxy", False),
        flags.get("is_residential_proxy", False),
    )
    found = _ANONYMIZERS.get(key)
    if found is None:  # at most 32 combinations, so shared
        found = _ANONYMIZERS[key] = Anonymizer(*key)
    return found


def _part(record: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    part = record.get(key)
    if part is None or isinstance(part, Mapping):
        return part
    raise DatabaseError(f"{where}: {key} is {short(part)}, not a map")


def geoip2_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 / GeoLite2 Country, City, Enterprise and DB-IP records."""
    country_part = _part(record, "country", where)
    country = _country_code(country_part.get("iso_code"), where) if country_part else None
    registered = _part(record, "registered_country", where)
    represented = _part(record, "represented_country", where)
    represented_type = represented.get("type") if represented else None
    if represented_type is not None and not isinstance(represented_type, str):
        raise DatabaseError(f"{where}: represented_country.type is {short(represented_type)}")
    subdivisions: tuple[str, ...] = ()
    raw = record.get("subdivisions")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(sub, Mapping) for sub in raw):
            raise DatabaseError(f"{where}: subdivisions is {short(raw)}, not a list of maps")
        codes = []
        for sub in raw:
            code = sub.get("iso_code")
            if code is None:
                continue  # DB-IP City names subdivisions without ISO codes
            if not isinstance(code, str) or not _SUBDIVISION_CODE.fullmatch(code.upper()) or country is None:
                raise DatabaseError(f"{where}: subdivision code {short(code)} is not part of an ISO 3166-2 code")
            # MaxMind stores only the part after the hyphen ("43" under UA): ISO 3166-2 needs the country prefix.
            code = code.upper()
            codes.append(code if code.startswith(country + "-") else f"{country}-{code}")
        subdivisions = tuple(codes)
    traits = _part(record, "traits", where)
    anonymizer = None
    if traits and (any(key in traits for key in _FULL_ANONYMIZER_KEYS) or traits.get("is_anonymous_proxy") is True):
        # Enterprise/Insights traits carry the full set; City's legacy is_anonymous_proxy only says "yes".
        anonymizer = _anonymizer(traits, where)
    return Facts(
        country=country,
        registered_country=_country_code(registered.get("iso_code"), where) if registered else None,
        represented_country=_country_code(represented.get("iso_code"), where) if represented else None,
        represented_country_type=represented_type,
        subdivisions=subdivisions,
        anonymizer=anonymizer,
    )


_ABSENT: Final = object()


def geoip2_key(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Everything :func:`geoip2_facts` reads of *record*, as a key, or None when a part is not plain data
    (then the record is adapted, and validated, in full). A city record decodes to ~40 values (names in eight
    languages, coordinates, postal code) of which a decision uses a handful: adapting them costs ~5 µs, more
    than reading the record; looking the answer up by them costs a fraction of that."""
    country, registered, represented = record.get("country"), record.get("registered_country"), None
    if "represented_country" in record:
        represented = record["represented_country"]
    raw, traits = record.get("subdivisions"), record.get("traits")
    for part in (country, registered, represented, traits):
        if part is not None and type(part) is not dict:
            return None
    subdivisions = None
    if raw is not None:
        if type(raw) is not list:
            return None
        subdivisions = tuple([sub.get("iso_code", _ABSENT) if type(sub) is dict else _ABSENT for sub in raw])
        if _ABSENT in subdivisions and any(type(sub) is not dict for sub in raw):
            return None
    flags = None
    if traits:
        flags = tuple([traits.get(name, _ABSENT) for name in _ANONYMIZER_KEYS])
        for flag in flags:  # 1 == True and hashes alike, but only a bool is a flag: anything else in full
            if flag is not _ABSENT and flag is not True and flag is not False:
                return None
    return (
        country.get("iso_code") if country else None,
        registered.get("iso_code") if registered else None,
        (represented.get("iso_code"), represented.get("type", _ABSENT)) if represented else None,
        subdivisions,
        flags,
    )


def _anonymous_facts(record: Mapping[str, Any], where: str) -> Facts:
    """GeoIP2 Anonymous IP and GeoIP Anonymous Plus records (flags at the top level)."""
    return Facts(anonymizer=_anonymizer(record, where))


_FLAT_FACTS: Final[dict[Any, Facts]] = {}


def _flat_facts(record: Mapping[str, Any], where: str) -> Facts:
    """The ``{"country_code": "XX"}`` records of the ip-location-db packages (one shared value per code)."""
    code = record.get("country_code")
    found = _FLAT_FACTS.get(code) if type(code) is str else None
    if found is None:
        found = Facts(country=_country_code(code, where))
        if type(code) is str and len(_FLAT_FACTS) < 1024:
            _FLAT_FACTS[code] = found
    return found


SCHEMAS: Final[dict[str, Callable[[Mapping[str, Any], str], Facts]]] = {
    "geoip2": geoip2_facts,
    "anonymous": _anonymous_facts,
    "flat": _flat_facts,
}


def schema_of_record(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return None
    if isinstance(record.get("country_code"), str):
        return "flat"
    if any(isinstance(record.get(k), Mapping) for k in ("country", "registered_country", "represented_country")):
        return "geoip2"
    if "is_anonymous" in record or any(k in record for k in _ANONYMIZER_KEYS):
        return "anonymous"
    return None
