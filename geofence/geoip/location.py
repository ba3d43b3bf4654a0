"""What the GeoIP databases say about an address, as immutable values.

A :class:`Location` describes a *network*, not one address: the locator caches one per database network and
hands the same object to every address inside it, so it carries no per-address field.

The values are ``NamedTuple``\\ s rather than frozen dataclasses: they are built on the cache-miss path, where
a frozen dataclass's ``__init__`` (one ``object.__setattr__`` call per field) costs several times more.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, NamedTuple

__all__ = ["Anonymizer", "DatabaseInfo", "Location"]


class Anonymizer(NamedTuple):
    """Anonymizer flags: services that hide where the caller really is."""

    vpn: bool = False
    tor: bool = False
    hosting: bool = False
    public_proxy: bool = False
    residential_proxy: bool = False

    @property
    def any(self) -> bool:
        """True when any flag is set."""
        return True in self

    def as_dict(self) -> dict[str, bool]:
        """The five flags by name, JSON-ready (``geofence lookup --json``'s ``anonymizer``)."""
        return self._asdict()


class DatabaseInfo(NamedTuple):
    """Identity of one opened database: enough to say, later, which data a decision rested on."""

    path: str
    type: str
    build_epoch: int
    schema: str
    """``geoip2`` (GeoIP2/GeoLite2/DB-IP country, city, enterprise), ``anonymous`` or ``flat``."""

    @property
    def build_date(self) -> date:
        """The UTC day the database was built: what freshness (``max_age_days``) is measured from."""
        return datetime.fromtimestamp(self.build_epoch, UTC).date()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as decisions, audit records and ``geofence lookup --json`` show it."""
        return {"path": self.path, "type": self.type, "build_date": self.build_date.isoformat()}


class Location(NamedTuple):
    """The merged answer of every configured database for one network.

    ``geolocatable`` is True only when some database named a country. Otherwise ``reason`` says why:
    ``not_found`` (no database knows the address) or a special-purpose reason such as ``private``,
    ``loopback``, ``cgnat``, ``documentation`` or ``multicast`` (see :mod:`geofence.network.addresses`), for which no
    database is consulted at all.
    """

    network: str
    country: str | None = None
    registered_country: str | None = None
    represented_country: str | None = None
    represented_country_type: str | None = None
    """E.g. ``military``: the address belongs to a country's forces abroad (see README)."""
    subdivisions: tuple[str, ...] = ()
    """Full ISO 3166-2 codes, largest first (``UA-43``, ``GB-ENG``), from every database that gave any."""
    other_countries: tuple[str, ...] = ()
    """Countries that other configured databases named for this network when they disagree with ``country``."""
    anonymizer: Anonymizer | None = None
    """None when no anonymizer-capable database answered; flags otherwise."""
    reason: str | None = None
    databases: tuple[DatabaseInfo, ...] = ()
    """The databases that answered for this network, in configuration order."""

    @property
    def geolocatable(self) -> bool:
        """True when some database named a country; False for special-purpose ranges and unlisted addresses."""
        return self.country is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; the key names are a public contract (``geofence lookup --json``)."""
        return {
            "country": self.country,
            "registered_country": self.registered_country,
            "represented_country": self.represented_country,
            "represented_country_type": self.represented_country_type,
            "subdivisions": list(self.subdivisions),
            "other_countries": list(self.other_countries),
            "network": self.network,
            "anonymizer": None if self.anonymizer is None else self.anonymizer.as_dict(),
            "geolocatable": self.geolocatable,
            "reason": self.reason,
            "databases": [db.as_dict() for db in self.databases],
        }
