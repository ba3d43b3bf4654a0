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
from cryptography.hazmat.primitives.asymmetric import ec

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


def guarded(country_db: Path, url: str) -> GeofenceMiddleware:
    policy: dict[str, Any] = {
        "geoip": {"databases": [str(country_db)]},
        "identity": {
            "issuer": ISSUER,
            "audience": [AUDIENCE],
            "jwks_url": url,
            "jwks_refresh_seconds": 1,
            "leeway_seconds": 0,
        },
        "classes": {"EAR99": {}, "C": {"allow_destinations": ["US"], "persons": "us_only"}},
        "routes": [{"path": "/weights/**", "class": "C"}],
    }
    middleware = GeofenceMiddleware(Recorder(), config=policy)
    assert middleware._state is not None and middleware._state.verifier is not None
    assert middleware._state.verifier.ready.wait(10)
    return middleware


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
    middleware = guarded(country_db, jwks_server.url)
    state = middleware._state
    assert state is not None and state.verifier is not None
    us = token()
    for _ in range(3):  # verified, then remembered by digest, by value and in the front entry
        assert (await send(middleware, "GET", "/weights/a", headers=bearer(us))).status_code == 200
    before = state.verifier.generation
    # the refresh an unknown kid starts is rate-limited (30 s, not a policy setting): lifted for the test
    state.verifier.config = dataclasses.replace(state.verifier.config, jwks_min_refresh_seconds=0)
    rotated = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [jwk(rotated, "ec-2")]  # rsa-1 withdrawn
    new = token(rotated, "ES256", "ec-2")
    assert (await send(middleware, "GET", "/weights/b", headers=bearer(new))).status_code == 401  # starts a refresh
    assert wait_until(lambda: state.verifier is not None and state.verifier.generation > before)
    refused = await send(middleware, "GET", "/weights/a", headers=bearer(us))
    assert refused.status_code == 401 and "unknown signing key" in refused.json()["reasons"][0]["detail"]
    assert (await send(middleware, "GET", "/weights/b", headers=bearer(new))).status_code == 200
    middleware.close()
