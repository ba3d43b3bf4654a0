"""Peer rejection suites as data: PyJWT's own decode-rejection tests and the OWASP JWT cheat sheet's attacks.

Sources: PyJWT ``tests/test_api_jwt.py``, ``tests/test_api_jws.py`` and ``tests/test_advisory.py``
(jpadilla/pyjwt); OWASP Cheat Sheet Series, "JSON Web Token Cheat Sheet". Each row is a description, a
token built here with real keys, and the rejection reason geofence must give. Where geofence deliberately
differs from PyJWT's defaults, the row says so in a comment.

Out of scope, on purpose: OWASP's *token sidejacking* (binding a token to a hardened fingerprint cookie) is
the issuing app's session design: geofence issues no tokens and has no session to bind to. Likewise
*revocation* (geofence relies on short-lived tokens; its cache never outlives ``exp``), *sensitive data in
the payload* and *client-side token storage* are the IdP's and the app's concern.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geofence.identity.claims import IdentityError
from geofence.identity.tokens import TokenConfig, TokenVerifier

from .test_tokens import AUDIENCE, EC_KEY, ED_KEY, ISSUER, RSA_KEY, b64, claims, forge, jwk

SECRET = b"k" * 32  # PyJWT's tests sign with b"secret"; geofence refuses HMAC secrets under 32 bytes (RFC 7518 §3.2)
ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())
RSA_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
ED_PUBLIC_RAW = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ED_OPENSSH = ED_KEY.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


class Case(NamedTuple):
    description: str
    make: Callable[[], str]
    reason: str
    verifier: str = "keys"  # "keys": RS256/ES256/EdDSA from a JWKS file; "hmac": HS256 with a strong secret


def rs(header: dict[str, Any] | None = None, key: Any = RSA_KEY, **overrides: Any) -> str:
    return forge({"alg": "RS256", "kid": "rsa-1", **(header or {})}, claims(**overrides), key)


def hs(payload: dict[str, Any] | bytes | None = None, header: dict[str, Any] | None = None, **overrides: Any) -> str:
    """HS256 with the verifier's secret: everything but the row's defect is valid."""
    return forge({"alg": "HS256", "typ": "JWT", **(header or {})}, claims(**overrides) if payload is None else payload,
                 SECRET)  # fmt: skip


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in claims().items() if k not in names}


def resegment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def flip_unused_bits(token: str) -> str:
    """The same signature bytes spelled differently: the last character's unused low bits set."""
    signature = token.rsplit(".", 1)[1]
    assert len(signature) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(signature[-1]) | (0b1111 if len(signature) % 4 == 2 else 0b11)
    return token[:-1] + alphabet[value]


def whole_segment() -> dict[str, Any]:
    """Claims whose JSON is a multiple of 3 bytes long, so its base64url has no partial quantum to pad."""
    payload = claims(pad="")
    while len(json.dumps(payload)) % 3:
        payload["pad"] += "x"
    return payload


def padded_payload(token: str) -> str:
    """PyJWT's payload-padding case: one stray character makes the payload segment an impossible length."""
    return resegment(token, 1, "a" + token.split(".")[1])


def hmac_with(secret: bytes, header: dict[str, Any] | None = None) -> Callable[[], str]:
    """Algorithm confusion: HS256 keyed with a *public* key the attacker knows."""
    return lambda: forge({"alg": "HS256", "typ": "JWT", **(header or {})}, claims(), secret)


def none_alg(spelling: str) -> Callable[[], str]:
    return lambda: (
        f"{b64(json.dumps({'alg': spelling, 'kid': 'rsa-1'}).encode())}.{b64(json.dumps(claims()).encode())}."
    )


NOW = int(time.time())

PYJWT_CASES = [
    # tests/test_api_jwt.py
    Case("payload is not JSON (test_decode_invalid_payload_string)", lambda: hs(b"hello world"),
         "malformed token", "hmac"),
    Case("payload is not an object (test_decode_with_non_mapping_payload_throws_exception)", lambda: hs(b"1"),
         "malformed token", "hmac"),
    Case("aud is a number (test_decode_with_nonlist_aud_claim_throws_exception)", lambda: hs(aud=1),
         "token audience not accepted", "hmac"),
    Case("aud list holds a number (test_decode_with_invalid_aud_list_member_throws_exception)", lambda: hs(aud=[1]),
         "token audience not accepted", "hmac"),
    Case("exp is not a number (test_decode_raises_exception_if_exp_is_not_int)", lambda: hs(exp="not-an-int"),
         "token claim 'exp' is not a number", "hmac"),
    Case("iat is not a number (test_decode_raises_exception_if_iat_is_not_int)", lambda: hs(iat="not-an-int"),
         "token claim 'iat' is not a number", "hmac"),
    # PyJWT's test uses iat = now + 10 with no leeway; geofence allows 30 s of clock skew, so the row is further out.
    Case("iat in the future (test_decode_raises_exception_if_iat_is_greater_than_now)", lambda: hs(iat=NOW + 600),
         "token not yet valid", "hmac"),
    Case("nbf is not a number (test_decode_raises_exception_if_nbf_is_not_int)", lambda: hs(nbf="not-an-int"),
         "token claim 'nbf' is not a number", "hmac"),
    # Also test_decode_with_expiration_with_leeway: geofence allows 30 s of skew, so this is further past.
    Case("expired (test_decode_with_expiration)", lambda: hs(exp=NOW - 120), "token expired", "hmac"),
    Case("not yet valid (test_decode_with_notbefore)", lambda: hs(nbf=NOW + 600), "token not yet valid", "hmac"),
    Case("aud not among the accepted (test_raise_exception_invalid_audience_list)", lambda: hs(aud="urn:someone"),
         "token audience not accepted", "hmac"),
    Case("no accepted aud in an aud array (test_raise_exception_invalid_audience_in_array)",
         lambda: hs(aud=["urn:someone", "urn:someone-else"]), "token audience not accepted", "hmac"),
    Case("no iss (test_raise_exception_token_without_issuer)", lambda: hs(without("iss")),
         "token lacks required claim 'iss'", "hmac"),
    Case("iss is a prefix of the issuer (test_rasise_exception_on_partial_issuer_match)", lambda: hs(iss=ISSUER[:-4]),
         "token issuer not accepted", "hmac"),
    Case("no aud (test_raise_exception_token_without_audience)", lambda: hs(without("aud")),
         "token lacks required claim 'aud'", "hmac"),
    Case("aud is null (test_raise_exception_token_with_aud_none_and_without_audience)", lambda: hs(aud=None),
         "token lacks required claim 'aud'", "hmac"),
    Case("another issuer (test_raise_exception_invalid_issuer)", lambda: hs(iss="urn:foo"),
         "token issuer not accepted", "hmac"),
    # PyJWT accepts a list of issuers in the *configuration*; geofence names one, so a token whose iss is a list
    # (even one holding ours) is not ours.
    Case("iss is a list (test_raise_exception_invalid_issuer_list)", lambda: hs(iss=[ISSUER, "urn:bar"]),
         "token issuer not accepted", "hmac"),
    Case("iss is a number (test_validate_iss_with_non_str)", lambda: hs(iss=123), "token issuer not accepted", "hmac"),
    # PyJWT requires exp only when asked (options={"require": ["exp"]}); geofence always requires it.
    Case("no exp (test_decode_should_raise_error_if_exp_required_but_not_present)", lambda: hs(without("exp")),
         "token lacks required claim 'exp'", "hmac"),
    Case("sub is a number (test_decode_invalid_int_sub_claim)", lambda: hs(sub=1224344),
         "token claim 'sub' is not a string", "hmac"),
    Case("jti is a number (test_jti_claim_with_invalid_int_value)", lambda: hs(jti=12223),
         "token claim 'jti' is not a string", "hmac"),
    # PyJWT (2.12+) rejects unknown critical extensions and supports "b64"; geofence supports none, so any crit
    # header is refused, whatever the PyJWT version.
    Case("unknown critical extension (test_decode_rejects_token_with_unknown_crit_extension)",
         lambda: hs(header={"crit": ["x-custom-policy"], "x-custom-policy": "require-mfa"}),
         "token has an unsupported critical header", "hmac"),
    Case("empty crit (test_decode_rejects_empty_crit)", lambda: hs(header={"crit": []}),
         "token has an unsupported critical header", "hmac"),
    Case("crit is not a list (test_decode_rejects_non_list_crit)", lambda: hs(header={"crit": "b64"}),
         "token has an unsupported critical header", "hmac"),
    Case("crit b64 (test_decode_accepts_supported_crit_extension: refused here)",
         lambda: hs(header={"crit": ["b64"], "b64": True}), "token has an unsupported critical header", "hmac"),
    # tests/test_api_jws.py
    Case("alg outside the allowed list (test_decode_fails_when_alg_is_not_on_method_algorithms_param)",
         lambda: forge({"alg": "HS384"}, claims(), SECRET + SECRET), "token algorithm 'HS384' is not allowed", "hmac"),
    Case("two segments (test_decode_missing_segments_throws_exception)", lambda: hs().rsplit(".", 1)[0],
         "malformed token", "hmac"),
    Case("header is not an object (test_decode_with_non_mapping_header_throws_exception)",
         lambda: resegment(hs(), 0, "MQ"), "malformed token", "hmac"),
    Case("alg in lower case (test_decode_algorithm_param_should_be_case_sensitive)",
         lambda: resegment(hs(), 0, b64(b'{"alg": "hs256"}')), "token algorithm 'hs256' is not allowed", "hmac"),
    Case("wrong secret (test_bad_secret)", lambda: forge({"alg": "HS256"}, claims(), b"w" * 32),
         "token signature invalid", "hmac"),
    Case("header padding (test_decode_invalid_header_padding)", lambda: "a" + hs(), "malformed token", "hmac"),
    Case("header not UTF-8 JSON (test_decode_invalid_header_string)",
         lambda: resegment(hs(), 0, "eyJhbGciOiAiSFMyNTbpIiwgInR5cCI6ICJKV1QifQ=="), "malformed token", "hmac"),
    Case("payload padding (test_decode_invalid_payload_padding)", lambda: padded_payload(hs(whole_segment())),
         "malformed token", "hmac"),
    Case("signature padding (test_decode_invalid_crypto_padding)",
         lambda: resegment(hs(), 2, "aa" + hs().split(".")[2]), "malformed token", "hmac"),
    Case("alg none (test_decode_with_algo_none_should_fail)", none_alg("none"),
         "token algorithm 'none' is not allowed"),
    Case("kid is a number (test_get_unverified_header_fails_on_bad_header_types)", lambda: hs(header={"kid": 123}),
         "malformed token (kid)", "hmac"),
    Case("no alg (test_verify_signature_with_no_algo_header_throws_exception)",
         lambda: resegment(hs(), 0, b64(b'{"typ": "JWT"}')), "token algorithm 'None' is not allowed", "hmac"),
    # tests/test_advisory.py (GHSA-ffqj-6fqr-9h24): HMAC keyed with an Ed25519 public key in SSH form.
    Case("HS256 keyed with the Ed25519 public key (SSH form), where only EdDSA is expected", hmac_with(ED_OPENSSH),
         "token algorithm 'HS256' is not allowed"),
    Case("HS256 keyed with the Ed25519 public key, where HS256 is allowed: only the secret verifies",
         hmac_with(ED_OPENSSH), "token signature invalid", "hmac"),
]  # fmt: skip

OWASP_CASES = [
    # "None hashing algorithm"
    *(Case(f"alg {spelling!r}", none_alg(spelling), f"token algorithm '{spelling}' is not allowed")
      for spelling in ("none", "None", "NONE", "nOnE")),
    # "Algorithm confusion": RS256 -> HS256 with the RSA public key (PEM) as the HMAC secret.
    Case("HS256 keyed with the RSA public key (PEM), kid of the RSA key", hmac_with(RSA_PEM, {"kid": "rsa-1"}),
         "token algorithm 'HS256' is not allowed"),
    Case("HS256 keyed with the RSA public key where HS256 is allowed", hmac_with(RSA_PEM), "token signature invalid",
         "hmac"),
    Case("HS256 keyed with the raw Ed25519 public key", hmac_with(ED_PUBLIC_RAW, {"kid": "ed-1"}),
         "token algorithm 'HS256' is not allowed"),
    # "Header injection": kid is only ever a dictionary key here, never a path, query or command.
    *(Case(f"kid injection {kid!r}", lambda kid=kid: rs({"kid": kid}, ATTACKER_RSA), f"unknown signing key {kid!r}")
      for kid in ("../../../../../../dev/null", "/dev/null", "' OR '1'='1", "rsa-1' --", "| cat /etc/passwd",
                  "http://attacker.example/key")),
    Case("kid of a real key, signed by the attacker", lambda: rs(key=ATTACKER_RSA), "token signature invalid"),
    # jku / x5u / jwk / x5c headers are never fetched or trusted: the configured key decides.
    Case("jku to the attacker's JWKS", lambda: rs({"jku": "https://attacker.example/jwks.json"}, ATTACKER_RSA),
         "token signature invalid"),
    Case("x5u to the attacker's certificate", lambda: rs({"x5u": "https://attacker.example/cert.pem"}, ATTACKER_RSA),
         "token signature invalid"),
    Case("embedded jwk of the attacker's key (CVE-2018-0114)",
         lambda: rs({"jwk": jwk(ATTACKER_RSA, "rsa-1")}, ATTACKER_RSA), "token signature invalid"),
    Case("embedded jwk, kid omitted", lambda: forge({"alg": "ES256", "jwk": jwk(ATTACKER_EC, "x")}, claims(),
                                                    ATTACKER_EC), "token signature invalid"),
    Case("x5c with the attacker's key", lambda: rs({"x5c": ["MIIB..."]}, ATTACKER_RSA), "token signature invalid"),
    # "Token sidejacking" is out of scope (see the module docstring).
    # Not in the cheat sheet, same family: one token, one spelling. Non-canonical base64url would let an attacker
    # re-spell a rejected token so the replay cache misses it.
    Case("signature re-spelled with non-zero unused bits", lambda: flip_unused_bits(rs()),
         "malformed token (not three base64url segments)"),
    Case("padding added", lambda: rs() + "==", "malformed token"),
    Case("whitespace inside", lambda: rs().replace(".", ". ", 1), "malformed token"),
]  # fmt: skip


@pytest.fixture(scope="module")
def verifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TokenVerifier]:
    path: Path = tmp_path_factory.mktemp("keys") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"), jwk(ED_KEY, "ed-1")]}))
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOFENCE_REJECTIONS_SECRET", SECRET.decode())
    hmac = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("HS256",),
                                     hmac_secret_env="GEOFENCE_REJECTIONS_SECRET"))  # fmt: skip
    mp.undo()
    return {"keys": TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=path)), "hmac": hmac}


def test_the_valid_baselines_pass(verifiers: dict[str, TokenVerifier]) -> None:
    """Each table's rows differ from these accepted tokens only in what they test."""
    assert verifiers["hmac"].identity(hs()).us_person
    assert verifiers["keys"].identity(rs()).us_person
    assert verifiers["keys"].identity(forge({"alg": "EdDSA", "kid": "ed-1"}, claims(), ED_KEY)).us_person


@pytest.mark.parametrize("case", PYJWT_CASES + OWASP_CASES, ids=lambda c: c.description)
def test_rejections(verifiers: dict[str, TokenVerifier], case: Case) -> None:
    with pytest.raises(IdentityError) as info:
        verifiers[case.verifier].identity(case.make())
    assert case.reason in str(info.value)
