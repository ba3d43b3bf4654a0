"""What the native path remembers of identities never outlives what vouched for them.

A verified identity is remembered three ways on the native path: by token digest (as on the reference path),
by the exact ``Authorization`` value, and in the front entry of a request key (its last value, identity and
decision). Each must give way to another token, to the token's expiry, to a duplicated header, and to the
withdrawal of the signing key from the JWKS, against a real JWKS endpoint on loopback.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geofence import GeofenceMiddleware
from geofence.native import core

from .conftest import wait_until
from .test_middleware import Recorder, send
from .test_tokens import AUDIENCE, ISSUER, RSA_KEY, JWKSServer, jwk, token

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer([jwk(RSA_KEY, "rsa-1")])
    yield server
    server.close()


def guarded(country_db: Path, url: str, **identity: Any) -> GeofenceMiddleware:
    policy: dict[str, Any] = {
        "geoip": {"databases": [str(country_db)]},
        "identity": {
            "issuer": ISSUER,
            "audience": [AUDIENCE],
            "jwks_url": url,
            "jwks_refresh_seconds": 1,
            "leeway_seconds": 0,
            **identity,
        },
        "classes": {"EAR99": {}, "C": {"allow_destinations": ["US"], "persons": "us_only"}},
        "routes": [{"path": "/weights/**", "class": "C"}],
    }
    middleware = GeofenceMiddleware(Recorder(), config=policy)
    assert middleware._state is not None and middleware._state.verifier is not None
    assert middleware._state.verifier.ready.wait(10)
    return middleware


async def warmed(country_db: Path, url: str, value: str) -> tuple[GeofenceMiddleware, Any]:
    """A guarded app that allowed *value* three times (verified, then remembered every way), and its verifier,
    its refresh no longer rate-limited (30 s, not a policy setting): lifted for the test."""
    middleware = guarded(country_db, url)
    state = middleware._state
    assert state is not None and state.verifier is not None
    for _ in range(3):
        assert (await send(middleware, "GET", "/weights/a", headers=bearer(value))).status_code == 200
    state.verifier.config = dataclasses.replace(state.verifier.config, jwks_min_refresh_seconds=0)
    return middleware, state.verifier


def rotate(jwks_server: JWKSServer, verifier: Any, keys: list[dict[str, Any]]) -> None:
    """Publish *keys* as the JWKS and wait until the verifier has taken them as a key change."""
    before = verifier.generation
    jwks_server.keys = keys
    verifier._refresh("test")
    assert wait_until(lambda: verifier.generation > before)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def remembered(middleware: GeofenceMiddleware) -> list[Any]:
    """The memos of the front entries of identity routes (one per request key seen twice)."""
    state = middleware._state
    assert state is not None
    return [entry.memo[0] for entry in state.front._data.values() if entry.memo is not None]


async def test_another_token_a_duplicate_header_and_expiry_are_never_answered_from_memory(
    country_db: Path, jwks_server: JWKSServer
) -> None:
    middleware = guarded(country_db, jwks_server.url)
    us, german = token(), token(us_person=False, nationalities=["DEU"])
    for _ in range(3):
        assert (await send(middleware, "GET", "/weights/a", headers=bearer(us))).status_code == 200
    if core is not None:
        assert [memo[0] for memo in remembered(middleware)] == [f"Bearer {us}".encode()]
    no = await send(middleware, "GET", "/weights/a", headers=bearer(german))
    assert no.status_code == 451 and no.json()["reasons"][0]["code"] == "not_us_person"
    twice = await send(middleware, "GET", "/weights/a", headers=[("authorization", f"Bearer {us}")] * 2)
    assert twice.status_code == 401 and "2 authorization headers" in twice.json()["reasons"][0]["detail"]
    assert (await send(middleware, "GET", "/weights/a")).status_code == 401
    brief = token(exp=int(time.time()) + 2)
    for _ in range(3):
        assert (await send(middleware, "GET", "/weights/a", headers=bearer(brief))).status_code == 200
    time.sleep(2.2)
    expired = await send(middleware, "GET", "/weights/a", headers=bearer(brief))
    assert expired.status_code == 401 and expired.json()["reasons"][0]["detail"] == "token expired"
    middleware.close()


async def test_a_withdrawn_signing_key_stops_vouching_for_every_remembered_identity(
    country_db: Path, jwks_server: JWKSServer
) -> None:
    us = token()
    middleware, verifier = await warmed(country_db, jwks_server.url, us)
    before = verifier.generation
    rotated = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [jwk(rotated, "ec-2")]  # rsa-1 withdrawn
    new = token(rotated, "ES256", "ec-2")
    assert (await send(middleware, "GET", "/weights/b", headers=bearer(new))).status_code == 401  # starts a refresh
    assert wait_until(lambda: verifier.generation > before)
    refused = await send(middleware, "GET", "/weights/a", headers=bearer(us))
    assert refused.status_code == 401 and "unknown signing key" in refused.json()["reasons"][0]["detail"]
    assert (await send(middleware, "GET", "/weights/b", headers=bearer(new))).status_code == 200
    middleware.close()


@pytest.mark.parametrize(("source", "carry"), [("cookie:session", "cookie"), ("header:x-id-token", "x-id-token")])
async def test_a_token_read_from_a_cookie_or_another_header_is_never_remembered_by_authorization(
    country_db: Path, jwks_server: JWKSServer, source: str, carry: str
) -> None:
    """Where the token is not the Authorization value, that value (often the same for every client: an API
    key) must not stand for the token: a caller sharing the request key and the Authorization value with an
    allowed U.S. person, but carrying no token, another person's or a bad one, is decided on its own token."""
    middleware = guarded(country_db, jwks_server.url, source=source)
    shared = {"authorization": "Bearer public-api-key"}

    def carrying(value: str) -> dict[str, str]:
        return {**shared, carry: f"session={value}" if carry == "cookie" else value}

    us, german = token(), token(us_person=False, nationalities=["DEU"])
    for _ in range(3):
        assert (await send(middleware, "GET", "/weights/a", headers=carrying(us))).status_code == 200
    assert remembered(middleware) == []
    assert (await send(middleware, "GET", "/weights/a", headers=shared)).status_code == 401
    assert (await send(middleware, "GET", "/weights/a", headers=carrying(german))).status_code == 451
    assert (await send(middleware, "GET", "/weights/a", headers=carrying("garbage"))).status_code == 401
    middleware.close()


async def test_a_kid_reused_for_a_new_key_stops_vouching_for_the_old_one(
    country_db: Path, jwks_server: JWKSServer
) -> None:
    """An emergency rotation that keeps the kid: identities the replaced key signed are forgotten."""
    old = token()
    middleware, verifier = await warmed(country_db, jwks_server.url, old)
    replacement = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotate(jwks_server, verifier, [jwk(replacement, "rsa-1")])  # the same kid, another key
    refused = await send(middleware, "GET", "/weights/a", headers=bearer(old))
    assert refused.status_code == 401 and "signature" in refused.json()["reasons"][0]["detail"]
    assert (await send(middleware, "GET", "/weights/a", headers=bearer(token(replacement)))).status_code == 200
    middleware.close()


async def test_whoever_reads_the_new_key_generation_finds_only_the_new_caches(
    country_db: Path, jwks_server: JWKSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key change is published last: a request that sees the new generation never gets an identity from
    the caches of before (which would then be remembered as vouched for by the new keys)."""
    middleware, verifier = await warmed(country_db, jwks_server.url, token())
    old_caches, before = (verifier._cache, verifier._by_value), verifier.generation
    seen: list[tuple[int, bool]] = []

    class Watched(type(verifier)):  # type: ignore[misc]
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "generation":
                seen.append((value, (self._cache, self._by_value) == old_caches))
            super().__setattr__(name, value)

    monkeypatch.setattr(verifier, "__class__", Watched)
    jwks_server.keys = [jwk(ec.generate_private_key(ec.SECP256R1()), "ec-2")]
    verifier._refresh("test")
    assert wait_until(lambda: bool(seen))
    assert seen == [(before + 1, False)]  # the new generation was published after both caches were replaced
    middleware.close()


async def test_a_private_jwk_in_the_jwks_does_not_stop_a_withdrawal(country_db: Path, jwks_server: JWKSServer) -> None:
    """A JWKS that (wrongly) publishes a private JWK still replaces the keys: the withdrawn one stops vouching
    (reading its key bytes once failed, and the refresh kept the old keys)."""
    from jwt.algorithms import RSAAlgorithm

    old = token()
    middleware, verifier = await warmed(country_db, jwks_server.url, old)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotate(jwks_server, verifier, [{**RSAAlgorithm.to_jwk(other, as_dict=True), "kid": "rsa-2", "use": "sig"}])
    refused = await send(middleware, "GET", "/weights/a", headers=bearer(old))
    assert refused.status_code == 401 and "unknown signing key" in refused.json()["reasons"][0]["detail"]
    middleware.close()
