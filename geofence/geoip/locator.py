"""IP address → :class:`Location`: merge what every configured database says, cache it per network.

The cache belongs to the :class:`Locator` and so to the readers it opened: swapping databases means building a
new Locator, which can never serve an entry computed from the old files.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, Self

from maxminddb.decoder import Decoder
from maxminddb.errors import InvalidDatabaseError

from ..caches.networks import NetworkCache
from ..errors import DatabaseError, InvalidAddressError
from ..native import core
from ..network.addresses import SPECIAL_RANGES, address_key, format_network, key_address, special_range
from .databases import Facts, GeoDatabase, LoadMode, default_database_path, open_database
from .location import Anonymizer, Location

__all__ = ["DEFAULT_CACHE_SIZE", "Locator"]

log = logging.getLogger("geofence")

DEFAULT_CACHE_SIZE: Final = 65_536
"""Networks kept in the cache (about 20 MB at the most with a country database)."""
_MAX_FACTS: Final = 1 << 20  # distinct answers (country, subdivisions, flags...): a city database has ~10^5


class Locator:
    """Resolves addresses with one or more MaxMind-format databases.

    Databases are given in priority order. The first one that names a country decides ``country``; the
    countries the others name are kept in ``other_countries``, and ``subdivisions`` holds every ISO 3166-2
    code any of them gave (the codes carry their country, and a deny rule must see all of them). The first
    registered and represented country win. Anonymizer flags from every anonymizer-capable database are
    OR-ed. The merged network is the intersection of the databases' networks.
    """

    __slots__ = (
        "_cache",
        "_databases",
        "_decoders",
        "_fact_ids",
        "_facts",
        "_interning",
        "_new_records",
        "_records",
        "_switched_off",
        "_trees",
    )

    def __init__(
        self,
        databases: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        load: LoadMode = "copy",
    ) -> None:
        if databases is None:
            paths: list[str | os.PathLike[str]] = [default_database_path()]
        elif isinstance(databases, str | os.PathLike):
            paths = [databases]
        else:
            paths = list(databases)
        if not paths:
            raise DatabaseError("no GeoIP database configured")
        opened: list[GeoDatabase] = []
        try:
            for path in paths:
                opened.append(open_database(path, load))
        except BaseException:
            for db in opened:
                db.close()
            raise
        self._databases: tuple[GeoDatabase, ...] = tuple(opened)
        # network -> "facts-id network-text": a string, so the cache holds nothing the garbage collector tracks
        # (see netcache). The facts (everything but the network) are interned: one template per distinct
        # answer, and the id lets a caller cache decisions per answer rather than per network.
        self._cache: NetworkCache[str] = NetworkCache(cache_size)
        self._facts: list[tuple[object, ...]] = []
        self._fact_ids: dict[tuple[object, ...], int] = {}
        self._interning = threading.Lock()  # a new answer only: two threads must not take the same id
        # The native walk (geofence/native): the tree walked in C, each distinct record (by its data offset, one
        # per database) decoded once by the reader, here, and its facts id learnt. No cache per network.
        self._records: dict[object, int] = {}
        self._decoders: dict[int, tuple[Decoder, int]] = {}  # by database: the self-check's decoder, data start
        self._switched_off = False
        self._new_records = 0  # distinct records the walk found, learnt or not (see _learn)
        self._trees: Any = self.native_trees()

    @property
    def databases(self) -> tuple[GeoDatabase, ...]:
        """The open databases, highest priority first."""
        return self._databases

    @property
    def cached_networks(self) -> int:
        """How many networks the cache holds now."""
        return len(self._cache)

    def native_trees(self, trusted: Sequence[tuple[int, int]] = (), header: bytes | None = None, limit: int = 0) -> Any:
        """The native walker over these databases, sharing what this Locator learnt; with *trusted* proxies and
        their *header* (X-Forwarded-For only), it also resolves a request's client. None without the extension
        or without a database mapped for it, or once the self-check switched the walk off."""
        if core is None or self._switched_off or any(db.buffer is None for db in self._databases):
            return None
        shapes = [
            (db.buffer, db.metadata.node_count, db.metadata.record_size, db.ip_version, db.has_ipv4)
            for db in self._databases
        ]
        return core.Trees(shapes, self._records, SPECIAL_RANGES, tuple(trusted), header, limit)

    @property
    def native(self) -> bool:
        """Whether lookups walk the trees natively (see geofence/native)."""
        return self._trees is not None

    def lookup(self, ip: str) -> Location:
        """The Location of the network holding *ip*.

        Raises :class:`~geofence.errors.InvalidAddressError` for text that is not an address and
        :class:`~geofence.errors.DatabaseError` when a database turns out corrupt at this address.
        """
        # A dotted quad that parsed is already canonical: reuse it rather than format the key again.
        return self.location(*self.locate(address_key(ip), ip if ":" not in ip else None))

    def lookup_key(self, key: int) -> Location:
        """Like :meth:`lookup` for a key from :func:`~geofence.network.addresses.address_key` (no parsing)."""
        return self.location(*self.locate(key))

    def locate(self, key: int, ipv4_text: str | None = None) -> tuple[str, int]:
        """(network, facts id) for address *key*: plain values a cache can hold without the garbage collector
        tracking them. Equal ids mean equal Locations but for the network, so anything computed from the facts
        alone (a decision) can be shared across networks. :meth:`location` builds the Location.
        *ipv4_text*: the canonical dotted quad of *key*, when the caller has it (saves formatting it)."""
        trees = self._trees
        if trees is not None:
            found: tuple[str, int] | None = trees.locate(key)
            if found is not None:
                return found
        cached = self._cache.get(key)
        if cached is None:
            return self._resolve(key, ipv4_text)
        facts_id, _, network = cached.partition(" ")
        return network, int(facts_id)

    def location(self, network: str, facts_id: int) -> Location:
        """The Location of a :meth:`locate` answer."""
        return _new_location((network, *self._facts[facts_id]))

    def _intern(self, facts: tuple[object, ...]) -> int:
        """The id of *facts* (a Location's fields but the network), one per distinct answer."""
        facts_id = self._fact_ids.get(facts)
        if facts_id is None:
            with self._interning:
                facts_id = self._fact_ids.get(facts)
                if facts_id is None:
                    if len(self._facts) >= _MAX_FACTS:
                        raise DatabaseError(f"more than {_MAX_FACTS} distinct answers in the configured databases")
                    self._facts.append(facts)  # before the id is published: a reader never indexes past the end
                    facts_id = self._fact_ids[facts] = len(self._facts) - 1
        return facts_id

    def _resolve(self, key: int, ipv4_text: str | None = None) -> tuple[str, int]:
        if type(key) is not int or not 0 <= key < 1 << 128:
            raise InvalidAddressError(f"{key!r} is not an address key")
        special, low, high = special_range(key)
        if special is not None:
            # not cached by network: a special run need not be one CIDR block (interning makes this cheap)
            return special.network, self._intern((None, None, None, None, (), (), None, special.reason, ()))
        if ipv4_text is None:
            address = key_address(key)
            text, v4 = address.text, address.version == 4
        else:
            text, v4 = ipv4_text, True
        prefix = 0
        answered: list[tuple[GeoDatabase, Facts]] = []
        asked: list[Any] = []  # what each database said (for the native self-check)
        for db in self._databases:
            if (db.ip_version == 4 and not v4) or (v4 and not db.has_ipv4):
                asked.append(_NOT_ASKED)
                continue  # an IPv4-only (IPv6-only) database knows nothing of this whole family
            try:
                record, length = db.reader.get_with_prefix_len(text)
            except (InvalidDatabaseError, ValueError, UnicodeDecodeError) as exc:
                if db.reader.closed:
                    raise DatabaseError(f"{db.info.path}: the database was closed") from None
                raise DatabaseError(f"{db.info.path}: corrupt data at {text} ({exc})") from None
            asked.append(record)
            length = (length if length > 0 else 0) + (96 if v4 else 0)
            if length > prefix:
                prefix = length
            if record or db.anonymizer_capable:  # an anonymizer database answers by silence too
                answered.append((db, db.facts(record)))
        network, facts_id = format_network(key, prefix), self._intern(_merge(answered))
        # Cache the largest block of the network that holds no special-purpose address (nearly always the
        # whole network; a database network straddling e.g. 100.64.0.0/10 is cached in smaller pieces).
        cached = prefix
        while (key & ~((1 << (128 - cached)) - 1)) < low or (key | ((1 << (128 - cached)) - 1)) > high:
            cached += 1
        self._cache.put(key, cached, f"{facts_id} {network}")
        if self._trees is not None:
            self._learn(key, network, facts_id, asked)
        return network, facts_id

    def _learn(self, key: int, network: str, facts_id: int, asked: list[Any]) -> None:
        """Teach the native walk the facts of the records that answered *key*. A record is learnt only once
        its data offset (where the walk landed) decodes, apart from the reader, to what the reader returned:
        every record up to the first few thousand (a country database has fewer), then a sample (a city
        database has a new record at nearly every lookup, and a decode costs several lookups); the reader keeps
        answering the records not checked. One record must never stand for two answers, and the walk's own
        answer for *key* must equal the reader's. Any disagreement switches the native walk off for this
        Locator and every resolver built on it (and says so)."""
        with self._interning:  # one learner at a time: none writes after another switched the walk off
            trees = self._trees
            if trees is None:
                return
            records = trees.records(key)
            if records is None:
                return
            known = self._records.get(records)
            if known is None:
                self._new_records += 1
                if not _sampled(self._new_records):
                    return  # not checked, so not learnt: the reader keeps answering this record
                offsets = records if isinstance(records, tuple) else (records,)
                if not all(self._decodes(i, offset, asked[i]) for i, offset in enumerate(offsets)):
                    self._switch_off(network)
                    return
            elif known != facts_id:  # the same records, another answer: the walk found the wrong ones
                self._switch_off(network)
                return
            self._records[records] = facts_id
            if trees.locate(key) != (network, facts_id):
                self._switch_off(network)

    def _decodes(self, index: int, offset: int, record: Any) -> bool:
        """Whether the native walk's *offset* in database *index* holds *record* (-2: not asked, -1: none)."""
        if offset < 0:
            return (offset == -2) == (record is _NOT_ASKED) and (offset == -2 or record is None)
        found = self._decoders.get(index)
        if found is None:
            db = self._databases[index]
            start = db.metadata.node_count * db.metadata.record_size // 4 + 16  # the data section, as the reader
            found = self._decoders[index] = (Decoder(db.buffer, start), start)  # type: ignore[arg-type]
        decoder, start = found
        try:
            return bool(decoder.decode(start + offset)[0] == record)
        except (InvalidDatabaseError, ValueError, IndexError, UnicodeDecodeError):
            return False

    def _switch_off(self, network: str) -> None:
        """Stop walking natively: every Trees built here reads its facts from ``_records``, emptied for good
        (nothing learns into it once ``_trees`` is None), so each of them hands every request to the reader."""
        self._trees = None
        self._switched_off = True
        self._records.clear()
        log.warning("geofence: the native tree walk disagreed with the reader at %s; using the reader", network)

    def close(self) -> None:
        """Close the database readers. Lookups after this raise :class:`DatabaseError`."""
        self._cache.clear()
        self._trees = None
        for db in self._databases:
            db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NOT_ASKED: Final = object()
_DECODE_ALL: Final = 4096  # distinct records all checked (and learnt); after them, 1 in 64
_DECODE_EVERY: Final = 64


def _sampled(found: int) -> bool:
    """Whether the *found*-th distinct record is checked and learnt (measured: a pure-Python decode of a city
    record costs ~50 µs, a whole cold lookup ~8 µs)."""
    return found <= _DECODE_ALL or found % _DECODE_EVERY == 0


_NOT_ANONYMOUS: Final = Anonymizer()
_NOT_FOUND: Final = (None, None, None, None, (), (), None, "not_found", ())
_new_location: Final[Callable[[tuple[object, ...]], Location]] = partial(tuple.__new__, Location)
"""Build a Location from a complete tuple: a NamedTuple's Python-level ``__new__`` costs ~4,000 instructions."""


def _merge(answered: list[tuple[GeoDatabase, Facts]]) -> tuple[object, ...]:
    """The fields of one Location but the network, from what each database said, in priority order (see
    :class:`Locator`)."""
    if len(answered) == 1:  # the common case, without the bookkeeping
        db, facts = answered[0]
        anonymizer = facts.anonymizer
        if anonymizer is None and db.anonymizer_capable:
            anonymizer = _NOT_ANONYMOUS
        return (
            facts.country,
            facts.registered_country,
            facts.represented_country,
            facts.represented_country_type,
            facts.subdivisions,
            (),
            anonymizer,
            None if facts.country is not None else "not_found",
            db.infos,
        )
    if not answered:
        return _NOT_FOUND
    countries: list[str] = []
    subdivisions: list[str] = []
    registered = represented = represented_type = None
    anonymizer = None
    for db, facts in answered:
        if facts.country is not None and facts.country not in countries:
            countries.append(facts.country)
        subdivisions.extend(code for code in facts.subdivisions if code not in subdivisions)
        registered = registered or facts.registered_country
        if represented is None:
            represented, represented_type = facts.represented_country, facts.represented_country_type
        if db.anonymizer_capable or facts.anonymizer is not None:
            flags = facts.anonymizer or _NOT_ANONYMOUS
            anonymizer = flags if anonymizer is None else Anonymizer(*map(operator.or_, anonymizer, flags))
    country = countries[0] if countries else None
    return (
        country,
        registered,
        represented,
        represented_type,
        tuple(subdivisions),
        tuple(countries[1:]),
        anonymizer,
        None if country is not None else "not_found",
        tuple(db.info for db, _ in answered),
    )
