"""The native request path (geofence/native/_core.c) against the Python reference: the same answers, always.

Each native piece answers only the plain cases and hands the rest to the reference, so every test here is
one question: where the native side answers, is its answer the reference's? On a random corpus (addresses,
forwarding chains, header lists, whole requests through the middleware: over 100,000 cases in all), on
MaxMind's own test databases, and on broken trees and random bytes, which must never crash it. The whole
suite also runs once more with ``GEOFENCE_NATIVE=0`` (``make test``), so every other test holds both paths.
"""

from __future__ import annotations

import copy
import mmap
import os
import random
from collections import UserDict
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import geofence.asgi.middleware as middleware_module
from geofence import GeofenceMiddleware
from geofence.asgi.plumbing import _send_private, private_responses
from geofence.asgi.where import ChainWarnings, locate_client
from geofence.errors import DatabaseError
from geofence.geoip.locator import Locator
from geofence.native import core, describe
from geofence.network.addresses import SPECIAL_RANGES, V4_BASE, address_key, format_network
from geofence.request.facts import Refused, reference_request_key

from .conftest import MAXMIND_TESTDATA
from .test_middleware import Recorder, anyio_backend, policy, send  # noqa: F401 (the anyio fixture)

pytestmark = pytest.mark.skipif(core is None, reason=f"no native extension: {describe()}")

SEED = int(os.environ.get("GEOFENCE_NATIVE_SEED", "20261207"))


def test_the_extension_was_built_where_it_can_be() -> None:
    """Every machine of this project has a C compiler: a missing extension is a broken install, not a skip."""
    if os.environ.get("GEOFENCE_NATIVE") == "0" or os.environ.get("GEOFENCE_NATIVE_OPTIONAL") == "1":
        pytest.skip("the reference path was asked for")
    assert core is not None, describe()


def reference(locator: Locator) -> Locator:
    """*locator* with its native walk switched off: the Python reference alone."""
    locator._trees = None
    return locator


# --- addresses -> location -------------------------------------------------------------------------------


def addresses(rnd: random.Random, n: int) -> Iterator[str]:
    """Random addresses of every kind the reference treats specially: IPv4, IPv6, IPv4-mapped, 6to4, NAT64,
    special-purpose ranges, the edges of the key space."""
    edges = ["0.0.0.0", "255.255.255.255", "::", "::1", "::ffff:0:0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    for i in range(n):
        kind = rnd.randrange(8)
        v4 = ".".join(str(rnd.randrange(256)) for _ in range(4))
        if i < len(edges):
            yield edges[i]
        elif kind < 3:
            yield v4
        elif kind == 3:
            yield ":".join(f"{rnd.randrange(65536):x}" for _ in range(8))
        elif kind == 4:
            yield f"2{rnd.randrange(4096):03x}:{rnd.randrange(65536):x}::{rnd.randrange(65536):x}"
        elif kind == 5:
            yield rnd.choice(
                [f"::ffff:{v4}", f"64:ff9b::{v4}", f"2002:{rnd.randrange(65536):x}:{rnd.randrange(65536):x}::1"]
            )
        elif kind == 6:
            first, last = rnd.choice(SPECIAL_RANGES)
            key = rnd.randrange(first, last + 1)
            yield (
                format_network(key, 128).split("/")[0]
                if not V4_BASE <= key <= V4_BASE + 0xFFFFFFFF
                else (".".join(str((key >> s) & 255) for s in (24, 16, 8, 0)))
            )
        else:
            yield f"2001:db8:{rnd.randrange(65536):x}::{rnd.randrange(65536):x}"


def same_lookups(databases: list[Path], n: int, load: str = "copy") -> int:
    native = Locator(databases, load=load)  # type: ignore[arg-type]
    plain = reference(Locator(databases, load=load))  # type: ignore[arg-type]
    assert native.native, "every configured database is mapped for the native walk"
    rnd = random.Random(SEED)
    mismatches = []
    for ip in addresses(rnd, n):
        try:
            expected: Any = plain.lookup(ip)
        except DatabaseError as exc:
            expected = ("error", str(exc))
        try:
            found: Any = native.lookup(ip)
        except DatabaseError as exc:
            found = ("error", str(exc))
        if found != expected:
            mismatches.append((ip, found, expected))
    assert native.native, "the walk never disagreed with the reader (a disagreement switches it off)"
    assert mismatches[:5] == []
    native.close()
    plain.close()
    return n


def test_lookups_match_the_reference_on_the_bundled_database() -> None:
    from geofence import default_database_path

    assert same_lookups([default_database_path()], 40_000) == 40_000


@pytest.mark.parametrize("load", ["copy", "mmap"])
def test_lookups_match_with_several_databases_and_both_load_modes(
    country_db: Path, city_db: Path, anonymous_db: Path, load: str
) -> None:
    same_lookups([country_db, city_db, anonymous_db], 10_000, load)


MAXMIND = ["GeoIP2-City-Test", "GeoIP2-Country-Test", "GeoIP2-Enterprise-Test", "GeoLite2-City-Test",
           "GeoIP2-Anonymous-IP-Test", "GeoIP-Anonymous-Plus-Test"]  # fmt: skip


@pytest.mark.parametrize("name", MAXMIND)
def test_lookups_match_on_maxminds_test_databases(name: str) -> None:
    path = MAXMIND_TESTDATA / f"{name}.mmdb"
    if not path.is_file():
        pytest.skip(f"{path} absent (MaxMind's test data beside the checkout)")
    same_lookups([path], 5_000)


def test_a_closed_locator_still_refuses_lookups(country_db: Path) -> None:
    locator = Locator([country_db])
    locator.lookup("8.8.8.8")
    locator.close()
    with pytest.raises(DatabaseError):
        locator.lookup("8.8.8.8")


class _Agrees:
    """What a walk that is wrong everywhere alike would answer when asked to confirm itself."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("wrong", ["a record already learnt", "a record never learnt"])
def test_a_walk_that_lands_on_the_wrong_record_is_switched_off_everywhere(
    country_db: Path, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The self-check does not trust the walk to confirm itself: each record it finds must decode, apart from
    the reader, to what the reader said, and one record must never stand for two answers. A failure switches
    the walk off in the Locator and in every resolver built on it."""
    locator = Locator([country_db])
    resolver = locator.native_trees()  # as the middleware's state holds one
    us, gb = address_key("8.8.8.8"), address_key("81.2.69.142")
    assert locator.lookup("8.8.8.8").country == "US" and resolver.locate(address_key("8.8.8.9")) is not None
    real = locator._trees
    if wrong == "a record already learnt":
        landed = real.records(us)  # a walk that finds the US record for a British address
    else:
        landed = real.records(address_key("5.8.1.1"))  # ...or the Russian one, not learnt yet

    asked: list[int] = []

    class Wrong:
        def records(self, key: int) -> Any:
            return landed if key == gb else real.records(key)

        def locate(self, key: int) -> Any:  # unknown when asked to answer; agreeing when asked to confirm
            asked.append(key)
            return _Agrees() if asked.count(key) == 2 else None

    locator._trees = Wrong()
    assert locator.lookup("81.2.69.142").country == "GB"  # the reader's answer stands
    assert not locator.native and locator.native_trees() is None
    assert resolver.locate(address_key("8.8.8.9")) is None  # the resolver built before gives way too
    assert locator.lookup("8.8.8.9").country == "US"
    assert "disagreed with the reader" in caplog.text and asked.count(gb) <= 2


def test_records_outside_the_checked_sample_are_left_to_the_reader(
    country_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the first records every one of which is checked, only a sample is (a city database has a new
    record nearly every lookup): a record not checked is never learnt, so a walk that landed on the wrong one
    cannot answer for it; the reader does, every time."""
    import geofence.geoip.locator as locator_module

    monkeypatch.setattr(locator_module, "_DECODE_ALL", 1)
    monkeypatch.setattr(locator_module, "_DECODE_EVERY", 10**9)
    locator = Locator([country_db])
    resolver = locator.native_trees()
    for ip in ("8.8.8.8", "81.2.69.142", "5.8.1.1", "2a02:ff0::1"):
        assert locator.lookup(ip).country is not None
    assert locator.native and len(locator._records) == 1  # the first record only: checked, then learnt
    assert resolver.locate(address_key("8.8.8.9")) is not None
    assert resolver.locate(address_key("5.8.9.9")) is None  # not checked: the reader answers
    real = locator._trees
    landed = real.records(address_key("81.2.69.142"))

    class Wrong:  # a walk that takes a Russian address for the British record, unchecked
        def records(self, key: int) -> Any:
            return landed if key == address_key("5.8.7.7") else real.records(key)

        def locate(self, key: int) -> Any:
            return None

    locator._trees = Wrong()
    assert locator.lookup("5.8.7.7").country == "RU"
    locator._trees = real
    assert resolver.locate(address_key("81.2.69.1")) is None  # nothing was learnt for that record


@pytest.mark.parametrize("name", ["MaxMind-DB-test-broken-search-tree-24", "MaxMind-DB-test-broken-pointers-24"])
def test_broken_trees_never_crash_the_walk(name: str) -> None:
    path = MAXMIND_TESTDATA / f"{name}.mmdb"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    db = open_raw(path)
    trees = core.Trees([db], {}, (), (), None, 0)  # type: ignore[union-attr]
    for ip in addresses(random.Random(SEED), 5_000):
        records = trees.records(address_key(ip))
        assert records is None or isinstance(records, int)


def open_raw(path: Path) -> tuple[Any, ...]:
    """A search-tree shape read from the file's metadata, as Locator.native_trees passes it."""
    import maxminddb

    reader = maxminddb.open_database(str(path))
    meta = reader.metadata()
    reader.close()
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    return (buffer, meta.node_count, meta.record_size, meta.ip_version, True)


def test_random_bytes_as_a_tree_never_crash_it() -> None:
    rnd = random.Random(SEED)
    for _ in range(300):
        size = rnd.randrange(40, 4000)
        data = bytes(rnd.randrange(256) for _ in range(size))
        record_size = rnd.choice([24, 28, 32])
        node_count = rnd.randrange(1, max(2, (size - 16) * 8 // (2 * record_size)))
        try:
            trees = core.Trees([(data, node_count, record_size, rnd.choice([4, 6]), True)], {}, (), (), None, 0)  # type: ignore[union-attr]
        except ValueError:
            continue
        for _ in range(20):
            trees.locate(rnd.randrange(1 << 128))
    with pytest.raises(ValueError):
        core.Trees([(b"x" * 10, 10, 24, 6, True)], {}, (), (), None, 0)  # type: ignore[union-attr]


def test_what_is_not_a_key_is_left_to_the_reference(country_db: Path) -> None:
    trees = Locator([country_db])._trees
    for bad in (-1, 1 << 128, True, 1.5, "1.2.3.4", None):
        assert trees.locate(bad) is None and trees.records(bad) is None


# --- the client: peer and X-Forwarded-For -----------------------------------------------------------------

_PEERS = ["10.0.0.5", "::ffff:10.0.0.5", "10.9.9.9", "8.8.8.8", "81.2.69.142", "2001:db8::1", "5.8.1.1",
          "fe80::1%eth0", "1.2.3.4:80", "", "unknown", "::ffff:8.8.8.8", "2002:808:808::1", "127.0.0.1"]  # fmt: skip
_NODES = [*_PEERS, "8.8.8.8:443", "[2001:db8::1]:443", "_hidden", "01.2.3.4", " 8.8.4.4", "\t1.1.1.1", "\xa01.1.1.1",
          "1.1.1.1:99999", "1.1.1.1:", ":80", "2a00:1450:4001:81b::200e", "64:ff9b::808:808"]  # fmt: skip


def chains(rnd: random.Random) -> bytes:
    nodes = [rnd.choice(_NODES) for _ in range(rnd.randrange(0, 5))]
    joined = rnd.choice([", ", ",", " , ", ",,"]).join(nodes)
    if rnd.random() < 0.05:
        joined = "1.2.3.4," * 700  # past max_header_bytes
    return joined.encode("latin-1")


class _Text(str):
    """Not a str to the reference (``type(text) is str``)."""


class _Bytes(bytes):
    """Not bytes to the native path: a subclass may run code of its own where the C reads a plain value."""


def test_client_resolution_matches_the_reference(country_db: Path, anonymous_db: Path) -> None:
    """Wherever the native resolver answers, the reference resolves the same client, to the same location,
    with no problem; and it leaves every broken chain, rewrite and odd value to the reference."""
    middleware = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    state = middleware._state
    assert state is not None and state.resolver is not None
    plain = reference(Locator([country_db, anonymous_db]))
    rnd = random.Random(SEED)
    answered = 0
    for _ in range(30_000):
        peer = rnd.choice([*_PEERS, None])
        if peer is not None and rnd.random() < 0.05:
            peer = _Text(peer)  # a str subclass: the reference refuses it (type(text) is str)
        forwarding: Any = {}
        if rnd.random() < 0.7:
            chain = chains(rnd)
            forwarding[b"x-forwarded-for"] = _Bytes(chain) if rnd.random() < 0.05 else chain
        if rnd.random() < 0.1:
            forwarding[b"forwarded"] = b"for=8.8.8.8"
        scope = {"client": (peer, 1) if peer is not None else None}
        expected = locate_client(scope, forwarding, state.proxies, plain, state.policy, ChainWarnings())
        found = state.resolver.resolve(peer, forwarding)
        if found is None:  # as the middleware does: the Python steps, which teach the walk a new record
            locate_client(scope, forwarding, state.proxies, state.locator, state.policy, ChainWarnings())
            continue
        answered += 1
        network, facts_id, key, text = found
        assert expected[2] is None and not expected[4], (peer, forwarding, expected)
        assert (network, text) == (expected[0], expected[5]), (peer, forwarding)
        assert state.locator.location(network, facts_id) == plain.location(expected[0], expected[1])
        assert key == address_key(text.rpartition(":")[0] if text.count(":") == 1 else text)
    assert answered > 3_000  # the corpus exercises the native path, not only its refusals
    middleware.close()


# --- the header pass --------------------------------------------------------------------------------------


def scopes(rnd: random.Random) -> Iterator[dict[str, Any]]:
    names = [b"host", b"x-forwarded-for", b"forwarded", b"accept", b"Host", b"x-request-id", b"cf-connecting-ip"]
    values = [b"api.example", b"", b"8.8.8.8", b"10.0.0.1, 8.8.8.8", b"\xff\xfe", b"a" * 3000, b"x:1"]
    while True:
        headers: list[Any] = [(rnd.choice(names), rnd.choice(values)) for _ in range(rnd.randrange(0, 6))]
        if rnd.random() < 0.03:
            headers.append([b"host", b"list-not-tuple"])
        if rnd.random() < 0.03:
            headers.append((_Bytes(rnd.choice(names)), rnd.choice(values)))
        if rnd.random() < 0.03:
            headers.append((rnd.choice(names), _Bytes(rnd.choice(values))))
        scope: dict[str, Any] = {"type": "http", "headers": headers if rnd.random() < 0.97 else tuple(headers)}
        for key, choices in (
            ("path", ["/v1/models", "/", "/x" * 1100, "/w%2F", "/é"]),
            ("root_path", ["", "/api", None]),
            ("method", ["GET", "POST", "", None, "get"]),
            ("client", [("10.0.0.5", 1), ("8.8.8.8", 2), None, ("fe80::1%eth0", 3), []]),
        ):
            choice = rnd.choice(choices)
            if choice is not None:
                scope[key] = choice
        yield scope


def _outcome(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Refused as exc:
        return ("refused", str(exc))


def test_the_header_pass_matches_the_reference() -> None:
    rnd = random.Random(SEED)
    watched = frozenset({b"x-forwarded-for", b"forwarded"})
    calls: list[Any] = []

    def trusted(peer: str | None) -> bool:
        calls.append(peer)
        return peer == "10.0.0.5"

    corpus = scopes(rnd)
    for _ in range(30_000):
        scope = next(corpus)
        needs_host = rnd.random() < 0.5
        calls.clear()
        expected = _outcome(reference_request_key, scope, watched, needs_host, trusted)
        asked = list(calls)
        calls.clear()
        assert _outcome(core.request_key, scope, watched, needs_host, trusted) == expected, scope  # type: ignore[union-attr]
        assert calls == asked  # the proxy check is asked exactly when the reference asks it


# --- private marking: the native send marks the response as the reference does --------------------------------

HEADER_NAMES = [
    *(b"content-type", b"cache-control", b"Cache-Control", b"CACHE-CONTROL", b"cdn-cache-control", b"etag"),
    *(b"Surrogate-Control", b"X-ACCEL-EXPIRES", b"edge-control", b"cloudflare-cdn-cache-control"),
    *(b"cache-controls", b"x-cache-control", "cache-control", bytearray(b"cache-control")),
]


def messages(rnd: random.Random) -> Iterator[Any]:
    """Response messages as apps send them, and as no app should: odd header containers, pairs and types."""
    while True:
        headers: Any = [
            (rnd.choice(HEADER_NAMES), rnd.choice([b"private", b"public, max-age=60", b"no-store", b"x"]))
            for _ in range(rnd.randrange(5))
        ]
        shape = rnd.random()
        if shape < 0.1:
            headers = tuple(headers)
        elif shape < 0.15:
            headers = rnd.choice([None, (), [], 0, iter(headers), [list(h) for h in headers], [(b"a", b"b", b"c")]])
        message: Any = {"type": rnd.choice(["http.response.start"] * 4 + ["http.response.body", "websocket.send"])}
        if rnd.random() < 0.9:
            message["headers"] = headers
        if rnd.random() < 0.03:
            del message["type"]
        if rnd.random() < 0.03:
            message = rnd.choice([[("type", "http.response.start")], None, UserDict(message)])
        yield message


def _sent(make: Any, message: Any) -> Any:
    sent: list[Any] = []

    def downstream(m: Any) -> str:
        sent.append({k: list(v) if k == "headers" and isinstance(v, Iterator) else v for k, v in m.items()})
        return "awaitable"

    try:
        result = make(downstream)(message)
    except Exception as exc:  # the reference's own error, for input no server sends
        return ("raised", type(exc))
    return result, sent


def test_private_marking_matches_the_reference() -> None:
    rnd = random.Random(SEED)
    corpus = messages(rnd)
    for _ in range(20_000):
        message = next(corpus)
        expected = _sent(lambda send: partial(_send_private, send), copy.deepcopy(message))
        got = _sent(private_responses, copy.deepcopy(message))
        assert got == expected, message
    assert type(private_responses(lambda m: m)).__name__ == "PrivateSend"  # the native one was measured


def test_private_marking_passes_keywords_and_odd_calls_as_the_reference_does() -> None:
    """send(message=...), extra keywords, no argument: the native send hands each to the reference as a
    partial would (a keyword value was once read as a dict: a crash)."""

    def downstream(m: Any, **kw: Any) -> Any:
        return ("sent", m, kw)

    calls = [
        lambda f: f(message={"type": "http.response.start", "headers": []}),
        lambda f: f({"type": "http.response.start", "headers": []}, extra=1),
        lambda f: f(),
        lambda f: f({"type": "http.response.body"}, {"second": 1}),
    ]
    for call in calls:
        outcomes = []
        for make in (lambda send: partial(_send_private, send), private_responses):
            try:
                outcomes.append(call(make(downstream)))
            except TypeError as exc:
                outcomes.append(("raised", str(exc)))
        assert outcomes[0] == outcomes[1]


def test_private_marking_holds_the_headers_while_a_finalizer_drops_them() -> None:
    """An allocation in the native send may run a collection, and a finalizer may take the headers out of the
    message: the list being copied stays alive (it was read after free)."""
    import gc

    class Bomb:
        def __init__(self, message: dict[str, Any]) -> None:
            self.message, self.me = message, self

        def __del__(self) -> None:
            self.message.pop("headers", None)

    send = private_responses(lambda m: m)
    try:
        for _ in range(500):
            message = {"type": "http.response.start", "headers": [(b"content-type", b"text/plain")] * 5}
            hold = [[] for _ in range(200)]  # the copy's list is a fresh allocation: a collection may run
            gc.disable()
            Bomb(message)
            gc.set_threshold(1)
            gc.enable()
            out = send(message)
            gc.set_threshold(700)
            assert out["headers"][:5] == [(b"content-type", b"text/plain")] * 5 and len(hold) == 200
    finally:
        gc.set_threshold(700)
        gc.enable()


# --- templates: a new client with known facts on a known route -------------------------------------------------


@pytest.mark.anyio
async def test_a_new_client_with_known_facts_gets_its_own_network_and_exemption(write_db: Any) -> None:
    """The native cold path reuses the decision of (route, location facts, exemption) for a new client: the
    decision the app sees carries the new client's own network, a denial stays a denial, and an exempt network
    with the same facts is decided apart."""
    us = {"country": {"iso_code": "US", "names": {"en": "US"}}}
    ru = {"country": {"iso_code": "RU", "names": {"en": "RU"}}}
    db = write_db("t.mmdb", "GeoIP2-Country", {"8.8.8.0/24": us, "9.9.9.0/24": us, "7.7.7.0/24": us,
                                               "5.8.0.0/16": ru, "5.9.0.0/16": ru})  # fmt: skip
    config = {
        "geoip": {"databases": [str(db)]},
        "defaults": {"class": "EAR99"},
        "classes": {"EAR99": {"deny_destinations": ["embargoed"]}, "US": {"allow_destinations": ["US"]}},
        "routes": [{"path": "/us/**", "class": "US"}],
        "exempt": {"networks": ["7.7.7.0/24"]},
    }
    recorder = Recorder()
    app = GeofenceMiddleware(recorder, config=config)
    assert app._state is not None and app._state.resolver is not None
    for peer in ("8.8.8.8", "5.8.1.1"):  # the Python steps learn each record, then the native path answers
        await send(app, "GET", "/us/a", peer=peer)
        assert len(app._state.templates) == 0 if peer == "8.8.8.8" else 1
        await send(app, "GET", "/us/a", peer=peer)
    assert len(app._state.templates) == 2
    for peer, status, network in [("9.9.9.9", 200, "9.9.9.0/24"), ("8.8.8.9", 200, "8.8.8.0/24"),
                                  ("5.9.1.1", 451, None), ("5.8.2.2", 451, None)]:  # fmt: skip
        response = await send(app, "GET", "/us/a", peer=peer)
        assert response.status_code == status, peer
        if network is not None:
            decision = recorder.calls[-1]["decision"]
            assert decision.location.network == network and decision.reasons == ()
    templates = len(app._state.templates)
    await send(app, "GET", "/us/a", peer="7.7.7.7")  # same facts as 8.8.8.0/24, but exempt: its own template
    assert len(app._state.templates) == templates + 1
    assert [r.detail for r in recorder.calls[-1]["decision"].reasons] == ["client in exempt network 7.7.7.0/24"]
    assert (await send(app, "GET", "/us/b", peer="9.9.9.1")).status_code == 200  # another path, another entry
    assert len(app._state.templates) == templates + 2
    app.close()


async def _status(app: Any, peer: str, method: str = "GET", path: str = "/", root_path: str = "",
                  host: bytes = b"api.example") -> int:  # fmt: skip
    """The status *app* answers a request built as a server builds its scope."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": root_path, "query_string": b"",
             "headers": [(b"host", host)], "client": (peer, 40000), "server": ("127.0.0.1", 8000)}  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def reply(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, reply)
    return statuses[0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("allowed", "denied"),
    [
        ({"method": "GET", "path": "/m"}, {"method": "POST", "path": "/m"}),
        ({"path": "/h"}, {"path": "/h", "host": b"secret.example"}),
        ({"path": "/x/y"}, {"path": "/x/y", "root_path": "/x"}),
    ],
    ids=["method", "host", "root_path"],
)
async def test_what_routes_a_request_is_part_of_what_a_new_client_reuses(
    write_db: Any, allowed: dict[str, Any], denied: dict[str, Any]
) -> None:
    """Two requests alike but for the method, the Host or the root path may have different classes: a new
    client's reused decision is never the other one's (each is decided, from the same location)."""
    de = {"country": {"iso_code": "DE", "names": {"en": "DE"}}}
    db = write_db("de.mmdb", "GeoIP2-Country", {"2.2.2.0/24": de, "3.3.3.0/24": de})
    config = {
        "geoip": {"databases": [str(db)]},
        "defaults": {"class": "EAR99"},
        "classes": {"EAR99": {"deny_destinations": ["embargoed"]}, "US": {"allow_destinations": ["US"]}},
        "routes": [
            {"method": "POST", "path": "/m", "class": "US"},
            {"host": "secret.example", "path": "/**", "class": "US"},
            {"path": "/y", "class": "US"},
        ],
    }
    app = GeofenceMiddleware(Recorder(), config=config)
    for peer in ("2.2.2.1", "2.2.2.2", "2.2.2.3"):  # learnt, then decided on the native path with a template
        assert await _status(app, peer, **allowed) == 200
    assert app._state is not None and len(app._state.templates) >= 1
    decided = app._decider.decided
    calls: list[object] = []
    app._decider.decided = lambda *a: calls.append(a) or decided(*a)  # type: ignore[method-assign]
    assert await _status(app, "3.3.3.1", **denied) == 451
    assert len(calls) == 1  # decided anew, not from the other request's template
    assert await _status(app, "3.3.3.2", **allowed) == 200
    assert len(calls) == 1  # this one reused its template
    app.close()


def test_header_names_of_a_bytes_subclass_are_left_to_the_reference() -> None:
    """A bytes subclass runs code of its own: a ``__hash__`` that empties the header list mid-pass (nothing
    may then read freed memory), an ``__eq__`` that claims to be the Host. The native pass takes exact types
    only and hands such lists to the reference, which answers as it always does."""
    headers: list[Any] = []

    class Clearing(bytes):
        def __hash__(self) -> int:
            headers.clear()
            return bytes.__hash__(self)

    watched = frozenset({b"x-forwarded-for"})
    for _ in range(200):
        headers[:] = [(b"accept", b"*/*"), (Clearing(b"x-forwarded-for"), b"8.8.8.8"), (b"host", b"a" * 64)]
        scope = {"type": "http", "headers": headers, "path": "/", "client": ("10.0.0.5", 1)}
        expected = _outcome(reference_request_key, scope, watched, True, lambda p: True)
        headers[:] = [(b"accept", b"*/*"), (Clearing(b"x-forwarded-for"), b"8.8.8.8"), (b"host", b"a" * 64)]
        assert _outcome(core.request_key, scope, watched, True, lambda p: True) == expected  # type: ignore[union-attr]

    class Host(bytes):  # says it is b"host" whatever it holds: the reference's == asks it, a memcmp would not
        def __eq__(self, other: object) -> bool:
            return other == b"host" or bytes.__eq__(self, other)  # type: ignore[arg-type]

        __hash__ = bytes.__hash__

    scope = {"type": "http", "headers": [(Host(b"x-host"), b"api.example")], "path": "/", "client": ("1.2.3.4", 1)}
    expected = _outcome(reference_request_key, scope, watched, True, lambda p: True)
    assert expected[1] == "api.example"
    assert _outcome(core.request_key, scope, watched, True, lambda p: True) == expected  # type: ignore[union-attr]


# --- whole requests: the native middleware and the reference middleware decide alike ------------------------


@pytest.mark.anyio
async def test_whole_requests_decide_alike(
    country_db: Path, anonymous_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    plain = GeofenceMiddleware(Recorder(), config=policy(country_db, anonymous_db))
    assert plain._state is not None
    plain._state.resolver = None
    reference(plain._state.locator)
    rnd = random.Random(SEED)
    paths = ["/v1/models", "/weights/a", "/shadow", "/healthz", "/weights/../x", "//weights/b"]
    for i in range(2_000):
        peer = rnd.choice(["10.0.0.5", "8.8.8.8", "5.8.1.1", "81.2.69.142", "2001:db8::1"])
        headers: dict[str, Any] = {"x-forwarded-for": chains(rnd)} if rnd.random() < 0.6 else {}
        if rnd.random() < 0.3:
            headers["x-identity"] = rnd.choice(["us", "de", "bad"])
        path = rnd.choice(paths)
        answers = []
        for app, key in ((native, None), (plain, reference_request_key)):
            if key is not None:
                monkeypatch.setattr(middleware_module, "request_key", key)
            response = await send(app, "GET", path, peer=peer, headers={**headers, "x-request-id": f"r{i}"})
            monkeypatch.undo()
            body = response.json() if response.headers.get("content-type", "").endswith("json") else response.text
            given = body.pop("request_id", None) if isinstance(body, dict) else None
            if given is not None and peer == "10.0.0.5":  # only the trusted proxy's id is taken, by both paths
                assert given == f"r{i}"
            answers.append((response.status_code, body))
        assert answers[0] == answers[1], (peer, headers, path)
    assert native._state is not None and len(native._state.clients) < len(plain._state.clients) / 2  # native ran
    native.close()
    plain.close()
