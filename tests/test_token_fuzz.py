"""Property-based fuzzing of token extraction and verification: only IdentityError escapes, and no mutation of
a valid token is ever accepted."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jwt
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from geofence.identity.claims import IdentityError
from geofence.identity.tokens import TokenConfig, TokenVerifier, token_from_scope

from .test_tokens import AUDIENCE, EC_KEY, ED_KEY, ISSUER, RSA_KEY, claims, jwk, token

SECRET = "f" * 64
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@functools.cache
def verifiers() -> tuple[TokenVerifier, TokenVerifier]:
    """One verifier for the asymmetric algorithms (JWKS file), one for HS256; built once for every example."""
    path = Path(tempfile.mkdtemp()) / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"), jwk(ED_KEY, "ed-1")]}))
    keys = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=path))
    os.environ["GEOFENCE_FUZZ_SECRET"] = SECRET
    try:
        hmac = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("HS256",),
                                         hmac_secret_env="GEOFENCE_FUZZ_SECRET"))  # fmt: skip
    finally:
        del os.environ["GEOFENCE_FUZZ_SECRET"]
    return keys, hmac


@functools.cache
def valid_tokens() -> tuple[tuple[str, TokenVerifier], ...]:
    """A valid token per algorithm, long-lived so that examples never race its expiry."""
    keys, hmac = verifiers()
    far = claims(exp=claims()["exp"] + 3600, verified_claims={"claims": {"nationalities": ["US"]}})
    made = [
        (token(RSA_KEY, "RS256", "rsa-1", **far), keys),
        (token(EC_KEY, "ES256", "ec-1", **far), keys),
        (token(ED_KEY, "EdDSA", "ed-1", **far), keys),
        (jwt.encode(far, SECRET, algorithm="HS256"), hmac),
    ]
    for value, verifier in made:
        assert verifier.identity(value).us_person
    return tuple(made)


def _only_identity_errors(verifier: TokenVerifier, value: str) -> None:
    try:
        verifier.identity(value)
    except IdentityError:
        pass


header_names = st.sampled_from([b"authorization", b"cookie", b"x-id-token", b"Authorization"]) | st.binary(max_size=16)
header_values = st.binary(max_size=300) | st.builds(
    lambda prefix, body: prefix + body, st.sampled_from([b"Bearer ", b"bearer  ", b"Basic ", b"id_token=", b""]),
    st.binary(max_size=200),
)  # fmt: skip


@FUZZ
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    source=st.sampled_from(["authorization", "cookie:id_token", "cookie:Session", "header:x-id-token"]),
)
def test_token_extraction_raises_only_identity_errors(headers: list[tuple[bytes, bytes]], source: str) -> None:
    try:
        found = token_from_scope({"headers": headers}, source, 256)
    except IdentityError:
        return
    assert found is None or (isinstance(found, str) and 0 < len(found) <= 256)


jwtish = st.lists(st.text(alphabet=BASE64URL + "=.+/ ", max_size=80), min_size=1, max_size=4).map(".".join)


@FUZZ
@given(value=st.text(max_size=400) | jwtish | st.text(alphabet=BASE64URL + ".", min_size=8000, max_size=9000))
def test_verification_of_arbitrary_strings_raises_only_identity_errors(value: str) -> None:
    for verifier in verifiers():
        _only_identity_errors(verifier, value)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, TokenVerifier]:
    original, verifier = draw(st.sampled_from(valid_tokens()))
    value = original
    for _ in range(draw(st.integers(1, 3))):
        # Anywhere, or at a segment's edges, where decoders are most lenient (padding, unused bits).
        edges = [j for j, ch in enumerate(value + ".") if ch == "."]
        i = draw(st.integers(0, len(value)) | st.sampled_from(edges + [j - 1 for j in edges]))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        c = draw(st.sampled_from("=. ") | st.sampled_from(BASE64URL) | st.characters())
        if kind == "replace" and i < len(value):
            value = value[:i] + c + value[i + 1 :]
        elif kind == "insert":
            value = value[:i] + c + value[i:]
        elif kind == "delete" and i < len(value):
            value = value[:i] + value[i + 1 :]
        elif kind == "swap" and i + 1 < len(value):
            value = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
    return original, value, verifier


@FUZZ
@given(case=mutated())
def test_a_mutated_token_is_never_accepted(case: tuple[str, str, TokenVerifier]) -> None:
    original, value, verifier = case
    assume(value != original)
    try:
        identity: Any = verifier.identity(value)
    except IdentityError:
        return
    raise AssertionError(f"a mutated token was accepted: {value!r} -> {identity}")
