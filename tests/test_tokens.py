"""Token verification with real RSA, EC and Ed25519 keys, and a real JWKS server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from geofence.identity.claims import IdentityError
from geofence.identity.tokens import TokenConfig, TokenVerifier, token_from_scope
from geofence.policy.load import PolicyError, parse_policy

from .conftest import wait_until

ISSUER = "https://idp.example.com"
AUDIENCE = "geofence-test"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk(private: Any, kid: str) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, "us_person": True,
            **overrides}  # fmt: skip


def token(private: Any = RSA_KEY, algorithm: str = "RS256", kid: str | None = "rsa-1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**overrides), private, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any] | bytes, key: Any) -> str:
    """A JWS built by hand, signed with *key* by the header's ``alg``: for tokens PyJWT refuses to encode
    (non-string ``iss``, weak keys, mismatched curves) and for attackers' tokens."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    algorithm = header["alg"]
    signature = b"" if algorithm == "none" else get_default_algorithms()[algorithm].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def token_policy(directory: Path, country_db: Path, classes: str) -> tuple[Path, Path]:
    """A policy file verifying tokens against a JWKS file holding the RSA key: (policy path, JWKS path)."""
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1")]}))
    path = directory / "geofence.toml"
    path.write_text(
        f'[geoip]\ndatabases = ["{country_db}"]\n'
        f'[identity]\nissuer = "{ISSUER}"\naudience = ["{AUDIENCE}"]\njwks_file = "{jwks}"\n{classes}'
    )
    return path, jwks


@pytest.mark.parametrize(
    ("private", "algorithm", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1"), (ED_KEY, "EdDSA", "ed-1")]
)
def test_valid_tokens(verifier: TokenVerifier, private: Any, algorithm: str, kid: str) -> None:
    identity = verifier.identity(token(private, algorithm, kid, nationalities=["USA"]))
    assert identity.us_person and identity.nationalities == ("US",)
    assert identity.issuer == ISSUER and identity.subject_hash is not None


def none_token() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def confused_token() -> str:
    """HS256 signed with the RSA *public key* as the HMAC secret: the classic algorithm confusion."""
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def tampered() -> str:
    header, _, signature = token().split(".")
    forged = b64(json.dumps(claims(us_person=True, nationalities=["US"], sub="mallory")).encode())
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(exp=int(time.time()) - 120), "token expired"),
        (lambda: token(nbf=int(time.time()) + 600), "token not yet valid"),
        (lambda: token(iss="https://evil.example"), "token issuer not accepted"),
        (lambda: token(aud="another-app"), "token audience not accepted"),
        (none_token, "token algorithm 'none' is not allowed"),
        (confused_token, "token algorithm 'HS256' is not allowed"),
        (lambda: token(kid="rsa-unknown"), "unknown signing key 'rsa-unknown'"),
        (tampered, "token signature invalid"),
        (lambda: token(EC_KEY, "ES256", "rsa-1"), "unknown signing key 'rsa-1'"),  # kid of another family
        (lambda: "not.a.token", "malformed token"),
        (lambda: "garbage", "malformed token"),
        (lambda: token(RSA_KEY, "RS512"), "token algorithm 'RS512' is not allowed"),
        (
            lambda: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, RSA_KEY, "RS256", {"kid": "rsa-1"}),
            "token lacks required claim 'exp'",
        ),
        (lambda: token(us_person="yes"), "claim 'us_person' must be true or false"),
        (lambda: token(nationalities=["Narnia"]), "is not an ISO 3166-1 or ICAO country code"),
    ],
)
def test_rejected_tokens(verifier: TokenVerifier, make: Any, reason: str) -> None:
    with pytest.raises(IdentityError) as info:
        verifier.identity(make())
    assert reason in str(info.value)


def test_small_leeway(verifier: TokenVerifier) -> None:
    assert verifier.identity(token(exp=int(time.time()) - 5)).us_person  # within 30 s of clock skew


def test_oversized_token(verifier: TokenVerifier) -> None:
    with pytest.raises(IdentityError, match="larger than 8192 bytes"):
        verifier.identity(token(padding="x" * 10_000))


def test_hmac_only_with_a_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFENCE_TEST_SECRET", "a-long-random-shared-secret-for-tests-0123456789")
    config = TokenConfig(
        issuer=ISSUER, audience=(AUDIENCE,), algorithms=("HS256",), hmac_secret_env="GEOFENCE_TEST_SECRET"
    )
    verifier = TokenVerifier(config)
    good = jwt.encode(claims(), "a-long-random-shared-secret-for-tests-0123456789", algorithm="HS256")
    assert verifier.identity(good).us_person
    with pytest.raises(IdentityError, match="signature invalid"):
        verifier.identity(confused_token())  # the RSA public key is not the secret
    monkeypatch.delenv("GEOFENCE_TEST_SECRET")
    with pytest.raises(IdentityError, match="not set"):
        TokenVerifier(config)


def test_identities_are_cached_until_exp(verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    short = token(exp=int(time.time()) + 1)
    first = verifier.identity(short)
    assert verifier.identity(short) is first and calls == 1
    verifier.config = TokenConfig(**{**verifier.config.__dict__, "leeway_seconds": 0})
    time.sleep(1.6)
    with pytest.raises(IdentityError, match="expired"):
        verifier.identity(short)  # the cache never outlives exp
    assert calls == 2


def test_rejections_are_remembered_briefly(verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tampered()
    with pytest.raises(IdentityError):
        verifier.identity(bad)
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("a known-bad token was verified again"))
    with pytest.raises(IdentityError, match="signature invalid"):
        verifier.identity(bad)


@pytest.mark.parametrize(
    ("level", "framework", "age_days", "problem"),
    [
        ("ial2", "nist_800_63A", 10, None),
        ("ial3", "nist_800_63A", 10, None),
        ("ial1", "nist_800_63A", 10, "assurance level below ial2"),
        ("ial2", "eidas", 10, "trust framework 'eidas' not accepted"),
        ("ial2", "nist_800_63A", 400, "verified more than 365 days ago"),
        ("substantial", "nist_800_63A", 10, "assurance level below ial2"),  # another scale never satisfies
    ],
)
def test_assurance_requirements(
    jwks_file: Path, level: str, framework: str, age_days: int, problem: str | None
) -> None:
    verifier = TokenVerifier(
        TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=jwks_file, min_assurance="ial2",
                    trust_frameworks=("nist_800_63A",), max_verification_age_days=365)
    )  # fmt: skip
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - age_days * 86400))
    verified = {"verification": {"trust_framework": framework, "assurance_level": level, "time": when},
                "claims": {"nationalities": ["DEU"]}}  # fmt: skip
    make = lambda: token(verified_claims=verified, us_person=False)  # noqa: E731
    if problem is None:
        assert verifier.identity(make()).nationalities == ("DE",)
    else:
        with pytest.raises(IdentityError, match=problem):
            verifier.identity(make())
    with pytest.raises(IdentityError, match="no verified_claims"):
        verifier.identity(token(nationalities=["DEU"]))


# --- token sources ----------------------------------------------------------------------------------------


def scope_with(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"headers": list(headers)}


def test_token_sources() -> None:
    assert (
        token_from_scope(scope_with((b"authorization", b"Bearer abc.def.ghi")), "authorization", 100) == "abc.def.ghi"
    )
    assert token_from_scope(scope_with((b"authorization", b"bearer  abc")), "authorization", 100) == "abc"
    assert token_from_scope(scope_with((b"authorization", b"Basic dXNlcg==")), "authorization", 100) is None
    assert token_from_scope(scope_with(), "authorization", 100) is None
    assert token_from_scope(scope_with((b"x-id-token", b"abc")), "header:x-id-token", 100) == "abc"
    cookie = (b"cookie", b"theme=dark; id_token=abc.def; lang=en")
    assert token_from_scope(scope_with(cookie), "cookie:id_token", 100) == "abc.def"


@pytest.mark.parametrize(
    ("headers", "source", "problem"),
    [
        (
            ((b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")),
            "authorization",
            "2 authorization headers",
        ),
        (((b"authorization", b"Bearer " + b"x" * 200),), "authorization", "larger than 100 bytes"),
        (((b"authorization", b"Bearer "),), "authorization", "empty bearer token"),
        (((b"cookie", b"id_token=a; id_token=b"),), "cookie:id_token", "appears more than once"),
    ],
)
def test_token_source_problems(headers: Any, source: str, problem: str) -> None:
    with pytest.raises(IdentityError, match=problem):
        token_from_scope(scope_with(*headers), source, 100)


def _read(read: Any) -> tuple[str, str | None]:
    try:
        return "token", read()
    except IdentityError as exc:
        return "error", str(exc)


_HEADER_VALUE = st.one_of(
    st.builds(
        lambda scheme, gap, token, tail: scheme + gap + token + tail,
        st.sampled_from([b"Bearer", b"bearer", b"BEARER", b" Bearer", b"Basic", b"Bearer\t", b""]),
        st.sampled_from([b" ", b"  ", b"\t", b""]),
        st.binary(max_size=12) | st.just(b"abc.def.ghi"),
        st.sampled_from([b"", b" ", b"\t", b" x", b"\r"]),
    ),
    st.binary(max_size=20),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the verifier is only read
@given(
    headers=st.lists(st.tuples(st.sampled_from([b"authorization", b"cookie", b"x-other"]), _HEADER_VALUE), max_size=3)
)
def test_the_verifiers_fast_reader_reads_exactly_what_token_from_scope_reads(
    headers: list[tuple[bytes, bytes]], verifier: TokenVerifier
) -> None:
    """The per-request reader of ``Authorization: Bearer`` takes shortcuts: never a different answer."""
    scope = scope_with(*headers)
    limit = verifier.config.max_token_bytes
    assert _read(lambda: verifier.token(scope)) == _read(lambda: token_from_scope(scope, "authorization", limit))


# --- JWKS over HTTP ---------------------------------------------------------------------------------------


class JWKSServer:
    """A real JWKS endpoint on 127.0.0.1 whose keys the test can rotate."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer([jwk(RSA_KEY, "rsa-1")])
    yield server
    server.close()


def url_verifier(url: str, min_refresh: int = 30) -> TokenVerifier:
    verifier = TokenVerifier(
        TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_url=url, jwks_min_refresh_seconds=min_refresh)
    )
    assert verifier.ready.wait(10)
    return verifier


def test_jwks_url_and_key_rotation_without_restart(jwks_server: JWKSServer) -> None:
    verifier = url_verifier(jwks_server.url, min_refresh=0)
    assert verifier.identity(token()).us_person
    assert jwks_server.requests == 1  # fetched once at start-up, off the request path

    rotated = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [jwk(RSA_KEY, "rsa-1"), jwk(rotated, "ec-2")]
    new_token = token(rotated, "ES256", "ec-2")
    with pytest.raises(IdentityError, match="unknown signing key 'ec-2'"):
        verifier.identity(new_token)  # refused now, never waited for; a refresh starts in the background
    assert wait_until(lambda: jwks_server.requests == 2)
    assert wait_until(lambda: _accepts(verifier, new_token))


def _accepts(verifier: TokenVerifier, value: str) -> bool:
    try:
        return verifier.identity(value).us_person
    except IdentityError:
        return False


def test_unknown_kid_refreshes_are_rate_limited(jwks_server: JWKSServer) -> None:
    verifier = url_verifier(jwks_server.url, min_refresh=30)
    for i in range(20):
        with pytest.raises(IdentityError):
            verifier.identity(token(kid=f"attacker-{i}"))
    time.sleep(0.3)
    assert jwks_server.requests == 1  # no refresh storm from made-up kids


def test_unreachable_jwks_keeps_cached_keys(jwks_server: JWKSServer) -> None:
    verifier = url_verifier(jwks_server.url, min_refresh=0)
    jwks_server.close()
    fresh = token(sub="bob")
    assert verifier.identity(fresh).us_person  # the cached key still verifies
    with pytest.raises(IdentityError, match="unknown signing key"):
        verifier.identity(token(kid="rsa-2"))


def test_unreachable_jwks_at_start_rejects_everything() -> None:
    verifier = url_verifier("http://127.0.0.1:9/jwks.json")
    with pytest.raises(IdentityError, match="unknown signing key"):
        verifier.identity(token())


# --- policy -----------------------------------------------------------------------------------------------


def identity_problems(identity: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy({"classes": {"EAR99": {}}, "identity": identity})
    return [str(p) for p in info.value.problems]


def test_identity_section_is_validated(jwks_file: Path) -> None:
    base = {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": str(jwks_file)}
    policy = parse_policy({"classes": {"EAR99": {}}, "identity": base})
    assert policy.tokens is not None and policy.tokens.jwks_file == jwks_file
    assert any("'none' is not a supported signature algorithm" in p
               for p in identity_problems({**base, "algorithms": ["none"]}))  # fmt: skip
    assert any("HS256 need hmac_secret_env" in p for p in identity_problems({**base, "algorithms": ["HS256"]}))
    assert any("one key source" in p for p in identity_problems({**base, "jwks_url": "https://idp/jwks"}))
    assert any(
        "identity.issuer: required" in p for p in identity_problems({"audience": ["a"], "jwks_file": str(jwks_file)})
    )
    assert any(
        "identity.audience: required" in p for p in identity_problems({"issuer": "i", "jwks_file": str(jwks_file)})
    )
    assert any("must include 'exp'" in p for p in identity_problems({**base, "required_claims": ["sub"]}))
    assert any("not a known assurance level" in p for p in identity_problems({**base, "min_assurance": "gold"}))
    assert any("'header:x y'" in p for p in identity_problems({**base, "source": "header:x y"}))
    assert any("did you mean 'RS256'" in p for p in identity_problems({**base, "algorithms": ["RS265"]}))
    assert any("no such file" in p for p in identity_problems({**base, "jwks_file": "/nonexistent/jwks.json"}))


def test_numeric_string_exp_is_honoured_by_the_cache(jwks_file: Path) -> None:
    verifier = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=jwks_file, leeway_seconds=0))
    short = token(exp=str(int(time.time()) + 1))
    assert verifier.identity(short).us_person
    time.sleep(1.6)
    with pytest.raises(IdentityError, match="expired"):
        verifier.identity(short)


def test_deeply_nested_junk_header_is_malformed(verifier: TokenVerifier) -> None:
    header = b64(b"[" * 1500)  # under the size limit, deeper than json can nest
    with pytest.raises(IdentityError, match="malformed token"):
        verifier.identity(f"{header}.e30.sig")


def test_policy_token_settings(jwks_file: Path) -> None:
    base = {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": str(jwks_file)}
    policy = parse_policy(
        {"classes": {"EAR99": {}}, "identity": {**base, "source": "header:X-Id-Token", "leeway_seconds": 0}}
    )
    assert policy.tokens is not None
    assert policy.tokens.source == "header:x-id-token"  # ASGI header names are lower case
    assert policy.tokens.leeway_seconds == 0
    remote = {k: v for k, v in base.items() if k != "jwks_file"}
    assert any(
        "must be https://" in p for p in identity_problems({**remote, "jwks_url": "http://idp.example.com/jwks"})
    )
    ok = parse_policy({"classes": {"EAR99": {}}, "identity": {**remote, "jwks_url": "http://127.0.0.1:8080/jwks"}})
    assert ok.tokens is not None and ok.tokens.jwks_url == "http://127.0.0.1:8080/jwks"
