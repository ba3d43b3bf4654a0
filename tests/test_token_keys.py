"""Weak and ill-fitting keys (RFC 7518 §3): refused at load when configured, skipped when fetched at run time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geofence.identity.claims import IdentityError
from geofence.identity.tokens import TokenConfig, TokenVerifier
from geofence.policy.load import PolicyError, parse_policy

from .test_tokens import AUDIENCE, ISSUER, RSA_KEY, JWKSServer, claims, forge, jwk, url_verifier

WEAK_RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024)
P384_KEY = ec.generate_private_key(ec.SECP384R1())
P192_KEY = ec.generate_private_key(ec.SECP192R1())
STRONG_SECRET = "s" * 64


def pem(private: Any, path: Path) -> Path:
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def policy_problems(identity: dict[str, Any]) -> list[str]:
    base = {"issuer": ISSUER, "audience": [AUDIENCE]}
    with pytest.raises(PolicyError) as info:
        parse_policy({"classes": {"EAR99": {}}, "identity": {**base, **identity}})
    return [str(p) for p in info.value.problems]


# --- configured keys: a load error naming the key --------------------------------------------------------


def test_weak_rsa_key_in_a_jwks_file(tmp_path: Path) -> None:
    path = jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "rsa-1"), jwk(WEAK_RSA, "old-1024"))
    with pytest.raises(IdentityError, match="key 'old-1024' is too weak: RSA key of 1024 bits"):
        TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=path))
    problems = policy_problems({"jwks_file": str(path)})
    assert any(p.startswith("identity.jwks_file:") and "'old-1024' is too weak" in p for p in problems)


def test_weak_rsa_public_key_file(tmp_path: Path) -> None:
    path = pem(WEAK_RSA, tmp_path / "idp.pem")
    with pytest.raises(IdentityError, match=r"idp\.pem: key is too weak: RSA key of 1024 bits"):
        TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), public_key_file=path))
    assert any(
        "identity.public_key_file:" in p and "too weak" in p for p in policy_problems({"public_key_file": str(path)})
    )


def test_ec_key_on_a_curve_no_algorithm_uses(tmp_path: Path) -> None:
    path = pem(P192_KEY, tmp_path / "p192.pem")
    with pytest.raises(IdentityError, match="EC curve secp192r1"):
        TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), public_key_file=path))


@pytest.mark.parametrize(
    ("algorithms", "secret", "problem"),
    [
        (("HS256",), "x" * 31, "HMAC secret of 31 bytes is too weak; HS256 needs at least 32"),
        (("HS384",), "x" * 47, "HS384 needs at least 48"),
        (("HS256", "HS512"), "x" * 48, "HS512 needs at least 64"),  # the longest hash configured decides
        (("HS256",), "x" * 32, None),
        (("HS512",), "x" * 64, None),
    ],
)
def test_hmac_secret_length(
    monkeypatch: pytest.MonkeyPatch, algorithms: tuple[str, ...], secret: str, problem: str | None
) -> None:
    monkeypatch.setenv("GEOFENCE_TEST_SECRET", secret)
    config = TokenConfig(
        issuer=ISSUER, audience=(AUDIENCE,), algorithms=algorithms, hmac_secret_env="GEOFENCE_TEST_SECRET"
    )
    identity = {"algorithms": list(algorithms), "hmac_secret_env": "GEOFENCE_TEST_SECRET"}
    if problem is None:
        TokenVerifier(config)
        assert parse_policy(
            {"classes": {"EAR99": {}}, "identity": {"issuer": ISSUER, "audience": [AUDIENCE], **identity}}
        )
        return
    with pytest.raises(IdentityError, match=problem) as info:
        TokenVerifier(config)
    assert "GEOFENCE_TEST_SECRET" in str(info.value) and secret not in str(info.value)  # named, never shown
    assert any(p.startswith("identity.hmac_secret_env:") and problem in p for p in policy_problems(identity))


# --- keys fetched at run time: the weak one is skipped, the others keep working ---------------------------


def test_weak_key_in_a_fetched_jwks_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    server = JWKSServer([jwk(WEAK_RSA, "old-1024"), jwk(RSA_KEY, "rsa-1")])
    try:
        with caplog.at_level(logging.WARNING, logger="geofence"):
            verifier = url_verifier(server.url)
        assert any("'old-1024'" in r.getMessage() and "too weak" in r.getMessage() for r in caplog.records)
        good = forge({"alg": "RS256", "kid": "rsa-1"}, claims(), RSA_KEY)
        assert verifier.identity(good).us_person
        weak = forge({"alg": "RS256", "kid": "old-1024"}, claims(), WEAK_RSA)
        with pytest.raises(IdentityError, match="unknown signing key 'old-1024'"):
            verifier.identity(weak)
    finally:
        server.close()


# --- a key must fit the token's algorithm ----------------------------------------------------------------


def test_ec_key_only_verifies_the_algorithm_of_its_curve(tmp_path: Path) -> None:
    """A P-256 key must not verify an ES384 token (RFC 7518 §3.4), even one the key's owner signed."""
    path = jwks(tmp_path / "jwks.json", jwk(P384_KEY, "ec-384"))
    verifier = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("ES256", "ES384"),
                                         jwks_file=path))  # fmt: skip
    assert verifier.identity(forge({"alg": "ES384", "kid": "ec-384"}, claims(), P384_KEY)).us_person
    mismatched = forge({"alg": "ES256", "kid": "ec-384"}, claims(), P384_KEY)
    with pytest.raises(IdentityError, match="signing key 'ec-384' is on curve secp384r1, which ES256 does not use"):
        verifier.identity(mismatched)


def test_jwk_alg_binds_the_key_to_one_algorithm(tmp_path: Path) -> None:
    path = jwks(tmp_path / "jwks.json", {**jwk(RSA_KEY, "rsa-1"), "alg": "PS256"})
    verifier = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("RS256", "PS256"),
                                         jwks_file=path))  # fmt: skip
    assert verifier.identity(forge({"alg": "PS256", "kid": "rsa-1"}, claims(), RSA_KEY)).us_person
    with pytest.raises(IdentityError, match="signing key 'rsa-1' is for PS256, not RS256"):
        verifier.identity(forge({"alg": "RS256", "kid": "rsa-1"}, claims(), RSA_KEY))


def test_a_key_pyjwt_cannot_load_at_all_does_not_disable_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """PyJWK raises NotImplementedError (not a PyJWT error) for ``"alg": "none"``: skip it like any bad key."""
    broken = {**jwk(RSA_KEY, "none-1"), "alg": "none"}
    server = JWKSServer([broken, jwk(RSA_KEY, "rsa-1")])
    try:
        with caplog.at_level(logging.WARNING, logger="geofence"):
            verifier = url_verifier(server.url)
        assert any("'none-1'" in r.getMessage() for r in caplog.records)
        assert verifier.identity(forge({"alg": "RS256", "kid": "rsa-1"}, claims(), RSA_KEY)).us_person
    finally:
        server.close()


@pytest.mark.parametrize("exp", [10**400, "1" + "0" * 400, 1e300, -5])
def test_expiry_must_be_a_time(tmp_path: Path, exp: Any) -> None:
    """A trusted signer's absurd ``exp`` must be a clear rejection, not a 503 with a traceback (10**400
    overflows a float) or an identity cached, and a WebSocket held open, forever (inf, 1e300)."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1")]}))
    verifier = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=path))
    token = forge({"alg": "RS256", "kid": "rsa-1"}, claims(exp=exp), RSA_KEY)
    with pytest.raises(IdentityError, match="exp"):
        verifier.identity(token)
