"""`[identity]` token settings end to end: cookie names, top_level_claims, expiry on the Identity, bounded caches."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from geofence.caches.budget import CacheBudget
from geofence.identity.claims import IdentityError
from geofence.identity.tokens import TokenConfig, TokenVerifier, token_from_scope
from geofence.policy.load import parse_policy

from .test_cli import geofence
from .test_tokens import (
    AUDIENCE,
    ISSUER,
    RSA_KEY,
    claims,
    identity_problems,
    scope_with,
    token,
    token_policy,
)

SECRET = "a-long-random-shared-secret-for-tests-0123456789"


def identity_settings(jwks_file: Path, **settings: Any) -> TokenConfig:
    identity = {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": str(jwks_file), **settings}
    policy = parse_policy({"classes": {"EAR99": {}}, "identity": identity})
    assert policy.tokens is not None
    return policy.tokens


# --- item 3: cookie names are case-sensitive, header names are not ----------------------------------------


def test_cookie_names_keep_their_case(jwks_file: Path) -> None:
    config = identity_settings(jwks_file, source="Cookie:Session")
    assert config.source == "cookie:Session"
    cookies = scope_with((b"cookie", b"session=wrong; Session=right"))
    assert token_from_scope(cookies, config.source, 100) == "right"
    assert token_from_scope(scope_with((b"cookie", b"session=wrong")), config.source, 100) is None


def test_header_names_are_case_insensitive(jwks_file: Path) -> None:
    assert identity_settings(jwks_file, source="Header:X-Id-Token").source == "header:x-id-token"
    # A TokenConfig an app builds by hand works too: ASGI header names are lower case.
    assert token_from_scope(scope_with((b"x-id-token", b"abc")), "header:X-Id-Token", 100) == "abc"


# --- item 1: top_level_claims --------------------------------------------------------------------------


def ida(nationalities: list[str], level: str = "ial2") -> dict[str, Any]:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    return {"verification": {"trust_framework": "nist_800_63A", "assurance_level": level, "time": when},
            "claims": {"nationalities": nationalities}}  # fmt: skip


def test_top_level_us_person_beside_verified_claims_is_ignored(verifier: TokenVerifier) -> None:
    identity = verifier.identity(token(verified_claims=ida(["DE"]), us_person=True, permanent_residence_country="US"))
    assert (identity.us_person, identity.nationalities, identity.permanent_residence) == (False, ("DE",), None)
    assert identity.claims_source == "verified_claims" and identity.trust_framework == "nist_800_63A"


def test_top_level_claims_setting(jwks_file: Path) -> None:
    assert identity_settings(jwks_file).top_level_claims == "fallback"
    assert identity_settings(jwks_file, min_assurance="ial2").top_level_claims == "never"
    assert identity_settings(jwks_file, max_verification_age_days=30).top_level_claims == "never"
    never = TokenVerifier(identity_settings(jwks_file, top_level_claims="never"))
    with pytest.raises(IdentityError, match="no verified_claims evidence"):
        never.identity(token(nationalities=["US"]))
    assert never.identity(token(verified_claims=ida(["US"]), us_person=False)).nationalities == ("US",)
    fallback = TokenVerifier(identity_settings(jwks_file))
    identity = fallback.identity(token(nationalities=["US"]))
    assert identity.us_person and identity.claims_source == "top_level"
    base = {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": str(jwks_file)}
    for requirement in ({"min_assurance": "ial2"}, {"trust_frameworks": ["nist_800_63A"]}):
        problems = identity_problems({**base, "top_level_claims": "fallback", **requirement})
        assert any(p.startswith("identity.top_level_claims: 'fallback' cannot be combined") for p in problems)
    assert any("'always' is not one of" in p for p in identity_problems({**base, "top_level_claims": "always"}))


def test_only_qualifying_elements_decide_in_a_token(jwks_file: Path) -> None:
    verifier = TokenVerifier(identity_settings(jwks_file, min_assurance="ial2"))
    identity = verifier.identity(token(verified_claims=[ida(["US"], level="ial1"), ida(["DE"])], us_person=True))
    assert (identity.us_person, identity.nationalities, identity.verified_elements) == (False, ("DE",), (1,))


def test_check_explains_which_claims_were_used(tmp_path: Path, country_db: Path) -> None:
    path, _ = token_policy(tmp_path, country_db, '[classes.EAR99]\n[classes.C]\npersons = "us_only"\n')
    mixed = token(verified_claims=ida(["DE"]), us_person=True)
    result = geofence("check", "--ip", "8.8.8.8", "--class", "C", "--token", mixed, "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert "claims used: verified_claims [0] (nist_800_63A, ial2, verified " in result.stdout
    assert "; token expires " in result.stdout
    plain = geofence("check", "--ip", "8.8.8.8", "--class", "C", "--token", token(), "--config", str(path))
    assert plain.returncode == 0 and "claims used: top-level claims" in plain.stdout


# --- item 4: the token's expiry on the Identity ---------------------------------------------------------


def test_identity_carries_the_token_expiry(verifier: TokenVerifier) -> None:
    exp = int(time.time()) + 600
    assert verifier.identity(token(exp=exp)).expires == float(exp)
    assert verifier.identity(token(exp=str(exp + 1))).expires == float(exp + 1)  # PyJWT accepts numeric strings


def test_identity_without_exp_has_no_expiry(jwks_file: Path) -> None:
    config = TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=jwks_file, required_claims=("iss", "aud"))
    verifier = TokenVerifier(config)
    payload = {k: v for k, v in claims().items() if k != "exp"}
    assert verifier.identity(jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})).expires is None


# --- item 5: bounded caches ----------------------------------------------------------------------------


def test_a_flood_of_distinct_tokens_keeps_the_hot_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFENCE_TEST_SECRET", SECRET)
    verifier = TokenVerifier(TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("HS256",),
                                         hmac_secret_env="GEOFENCE_TEST_SECRET"), CacheBudget(1))  # fmt: skip
    assert verifier._cache.max_entries < 300  # a tiny budget: the flood below overflows it
    hot = jwt.encode(claims(sub="hot"), SECRET, algorithm="HS256")
    flood = [jwt.encode(claims(sub=f"user-{i}"), SECRET, algorithm="HS256") for i in range(400)]
    verifier.identity(hot)
    calls = _count_decodes(monkeypatch)
    for i, other in enumerate(flood):
        verifier.identity(other)
        if i % 8 == 0:
            verifier.identity(hot)
    assert calls.count("hot") == 0  # never verified again: CLOCK kept it
    assert len(verifier._cache) <= verifier._cache.max_entries


def test_a_flood_of_bad_tokens_keeps_the_remembered_rejection(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(verifier.config, CacheBudget(1))
    assert verifier._rejected.max_entries == 64
    replayed = token(iss="https://evil.example")
    with pytest.raises(IdentityError, match="issuer not accepted"):
        verifier.identity(replayed)
    calls = _count_decodes(monkeypatch)
    for i in range(400):
        with pytest.raises(IdentityError):
            verifier.identity(f"junk.{i}.x")
        if i % 8 == 0:
            with pytest.raises(IdentityError, match="issuer not accepted"):
                verifier.identity(replayed)
    assert calls == [] and len(verifier._rejected) <= 64


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Subjects of the tokens PyJWT verifies from now on."""
    seen: list[str] = []
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        seen.append(result.get("sub", ""))
        return result

    def failing(*args: Any, **kwargs: Any) -> Any:
        try:
            return counting(*args, **kwargs)
        except jwt.InvalidTokenError:
            seen.append("(rejected)")
            raise

    monkeypatch.setattr(jwt, "decode", failing)
    return seen


def test_the_static_algorithm_list_is_pyjwts() -> None:
    """token_config lists the algorithms without importing PyJWT: it must stay PyJWT's list, less none."""
    from jwt.algorithms import get_default_algorithms

    from geofence.identity.config import SUPPORTED_ALGORITHMS

    assert set(SUPPORTED_ALGORITHMS) == set(get_default_algorithms()) - {"none"}


def test_token_libraries_load_only_for_a_policy_that_verifies_tokens(tmp_path: Path, country_db: Path) -> None:
    """`import geofence` and a policy without [identity] keys never import PyJWT, cryptography or urllib."""
    from .test_tokens import token_policy

    path, _ = token_policy(tmp_path, country_db, "[classes.EAR99]\n")
    heavy = ("jwt", "cryptography", "urllib.request")
    script = (
        "import sys, geofence\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "geofence.GeofenceMiddleware(lambda *a: None, config={'classes': {'EAR99': {}}})\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        f"geofence.GeofenceMiddleware(lambda *a: None, config={str(path)!r}, reload=False)\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, without_keys, with_keys = result.stdout.splitlines()
    assert before == without_keys == "[]"
    assert "'cryptography'" in with_keys and "'jwt'" in with_keys
