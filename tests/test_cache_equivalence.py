"""Caching never changes an answer: whatever the caches hold or evict, every request is decided as a fresh,
uncached evaluation of the same request would decide it (the network, client, decision, route and front
caches; the front cache's admission; entries shared by networks with the same answer)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.asgi.middleware import GeofenceMiddleware
from geofence.asgi.where import client_key, pack_client, unpack_client
from geofence.caches.bounded import BoundedCache
from geofence.caches.networks import NetworkCache
from geofence.geoip.locator import Locator
from geofence.policy.decision import Decision, decide

from .test_middleware import Recorder, http_scope, policy, run_asgi

# Peers across the test databases: several addresses per network, networks that share an answer, special
# ranges, IPv6, an unknown address, and a trusted proxy (10.0.0.0/8) forwarding for them.
_CLIENTS = ["8.8.8.1", "8.8.8.200", "81.2.69.7", "5.8.1.1", "5.8.200.9", "214.1.2.3", "100.1.2.3", "100.64.0.1",
            "2a02:ff0::1", "2a02:ff0::8", "1.1.1.1", "127.0.0.1", "8.8.8.129"]  # fmt: skip
_PATHS = ["/anything", "/weights/a", "/weights/b", "/shadow", "/healthz", "/weights//a", "/x/../weights/a"]


def _request(peer: str, via_proxy: bool, path: str) -> dict[str, Any]:
    if via_proxy:
        return http_scope(path, peer="10.1.1.1", headers=[(b"x-forwarded-for", peer.encode())])
    return http_scope(path, peer=peer)


def _tiny(middleware: GeofenceMiddleware) -> None:
    """Caches of one entry: every request evicts, admission and second chances are exercised constantly."""
    state = middleware._live.state
    assert state is not None
    state.front, state.clients, state.decisions, state.peers = (BoundedCache(1) for _ in range(4))  # type: ignore[assignment]
    state.locator._cache = NetworkCache(1)


def _decided(middleware: GeofenceMiddleware, recorder: Recorder, scope: dict[str, Any]) -> tuple[int, Any]:
    before = len(recorder.calls)
    sent = asyncio.run(run_asgi(middleware, scope, [{"type": "http.request", "body": b""}]))
    status = sent[0]["status"]
    if len(recorder.calls) > before:  # allowed: the decision the app was given
        decision: Decision = recorder.calls[-1]["decision"]
        return status, decision.as_dict()
    return status, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.tuples(st.sampled_from(_CLIENTS), st.booleans(), st.sampled_from(_PATHS)), min_size=1, max_size=40
    )
)
def test_cached_and_uncached_decisions_are_the_same(
    requests: list[tuple[str, bool, str]], country_db: Path, anonymous_db: Path
) -> None:
    config = policy(country_db, anonymous_db)
    cached_app = Recorder()
    cached = GeofenceMiddleware(cached_app, config=config)
    tiny_app = Recorder()
    tiny = GeofenceMiddleware(tiny_app, config=config)
    _tiny(tiny)
    state = cached._live.state
    assert state is not None
    with Locator([country_db, anonymous_db]) as fresh:
        for peer, via_proxy, path in requests:
            scope = _request(peer, via_proxy, path)
            first = _decided(cached, cached_app, dict(scope))
            assert first == _decided(tiny, tiny_app, dict(scope))
            assert first == _decided(cached, cached_app, dict(scope))  # again, now perhaps from the front cache
            decision = first[1]
            if decision is not None and decision["facts"]["location"] is not None and not decision["reasons"]:
                # and as a fresh Locator and decide() see it, without any cache of the middleware's
                reference = decide(state.policy, decision["export_class"], fresh.lookup(peer))
                assert reference.as_dict() == decision


_HEADERS = st.dictionaries(
    st.sampled_from([b"x-forwarded-for", b"forwarded", b"x-real-ip"]),
    st.binary(max_size=12) | st.sampled_from([b"1.2.3.4", b"1.2.3.4\x00x-real-ip=7:5.6.7.8", b"=3:abc"]),
    max_size=3,
)


@given(
    a=st.tuples(
        st.none() | st.sampled_from(["1.2.3.4", "", "-", "4:1.2", "1.2.3.4\x00x-forwarded-for=7:1.2.3.4"]), _HEADERS
    ),
    b=st.tuples(
        st.none() | st.sampled_from(["1.2.3.4", "", "-", "4:1.2", "1.2.3.4\x00x-forwarded-for=7:1.2.3.4"]), _HEADERS
    ),
)
def test_client_keys_are_distinct_for_distinct_peers_and_headers(
    a: tuple[str | None, dict[bytes, bytes]], b: tuple[str | None, dict[bytes, bytes]]
) -> None:
    """The client cache is keyed by one string: no peer and header set may spell another's."""
    if a != b:
        assert client_key(*a) != client_key(*b)


@given(
    client=st.tuples(
        st.none() | st.text(alphabet="0123456789./:abcdef", max_size=20),
        st.integers(-1, 10**6),
        st.none() | st.text(max_size=30).filter(bool),
        st.none() | st.text(alphabet="0123456789./:", max_size=20).filter(bool),
        st.booleans(),
        st.none() | st.text(alphabet="0123456789.:abcdef", max_size=39).filter(bool),
    )
)
def test_packed_clients_unpack_to_what_was_packed(client: Any) -> None:
    network = client[0] or None
    client = (network, *client[1:])
    assert unpack_client(pack_client(client)) == client
