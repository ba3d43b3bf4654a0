"""The token half of ``[identity]``: validated into a :class:`TokenConfig`, or None when no key source is set.

Key files are loaded here too, so ``geofence policy validate`` reports an unreadable or weak key before the
middleware would refuse to start with it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..identity.claims import ASSURANCE_LEVELS, TOP_LEVEL_CLAIMS, ClaimNames, IdentityError, TopLevelClaims
from ..identity.config import SUPPORTED_ALGORITHMS, TokenConfig, check_hmac_secret
from .checks import Checker

__all__ = ["TOKEN_KEYS", "token_config"]

TOKEN_KEYS: Final = (
    "source",
    "issuer",
    "audience",
    "algorithms",
    "jwks_url",
    "jwks_file",
    "public_key_file",
    "hmac_secret_env",
    "leeway_seconds",
    "required_claims",
    "min_assurance",
    "trust_frameworks",
    "max_verification_age_days",
    "top_level_claims",
    "websocket_grace_seconds",
    "max_token_bytes",
    "jwks_refresh_seconds",
)


def token_config(
    table: Mapping[str, Any], names: ClaimNames, base_dir: Path | None, check: Checker
) -> TokenConfig | None:
    """The token half of ``[identity]``: None when no key source is configured (identity then comes from the app)."""
    sources = [k for k in ("jwks_url", "jwks_file", "public_key_file") if k in table]
    token_keys = [k for k in TOKEN_KEYS if k in table]
    if not token_keys:
        return None
    if len(sources) > 1:
        check.error("identity", f"give one key source, not {' and '.join(sources)}")
    algorithms = tuple(check.strings(table.get("algorithms", ["RS256", "ES256", "EdDSA"]), "identity.algorithms"))
    for algorithm in algorithms:
        if algorithm not in SUPPORTED_ALGORITHMS:
            close = difflib.get_close_matches(algorithm, SUPPORTED_ALGORITHMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            check.error("identity.algorithms", f"{algorithm!r} is not a supported signature algorithm{hint}")
    hmac = [a for a in algorithms if a.startswith("HS")]
    secret_env = check.string(table.get("hmac_secret_env"), "identity.hmac_secret_env")
    if hmac and secret_env is None:
        check.error("identity.algorithms", f"{', '.join(hmac)} need hmac_secret_env (a secret, never a public key)")
    if not sources and not (hmac and secret_env):
        check.error("identity", "needs a key source: jwks_url, jwks_file or public_key_file")
    issuer = check.string(table.get("issuer"), "identity.issuer")
    if issuer is None:
        check.error("identity.issuer", "required to verify tokens")
    audience = tuple(check.strings(table.get("audience"), "identity.audience"))
    if not audience:
        check.error("identity.audience", "required to verify tokens")
    kind, colon, name = (check.string(table.get("source"), "identity.source") or "authorization").partition(":")
    kind = kind.lower()
    source = kind + colon + (name if kind == "cookie" else name.lower())  # cookie names are case-sensitive
    if not (source == "authorization" or re.fullmatch(r"(header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]+", source)):
        check.error("identity.source", f"{source!r} is not 'authorization', 'header:<name>' or 'cookie:<name>'")
    url = check.string(table.get("jwks_url"), "identity.jwks_url")
    if url is not None and not re.fullmatch(
        r"https://[^\s]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/[^\s]*", url
    ):
        check.error("identity.jwks_url", f"{url!r} must be https:// (plain http only on loopback): keys are trust")
    level = check.string(table.get("min_assurance"), "identity.min_assurance")
    if level is not None and not any(level in scale for scale in ASSURANCE_LEVELS):
        known = ", ".join(lv for scale in ASSURANCE_LEVELS for lv in scale)
        check.error("identity.min_assurance", f"{level!r} is not a known assurance level ({known})")
    frameworks = tuple(check.strings(table.get("trust_frameworks"), "identity.trust_frameworks"))
    max_age = check.integer(table.get("max_verification_age_days"), "identity.max_verification_age_days")
    top_level = _top_level(table, level is not None or bool(frameworks) or max_age is not None, check)

    def path(key: str) -> Path | None:
        value = check.string(table.get(key), f"identity.{key}")
        if value is None:
            return None
        full = base_dir / value if base_dir and not Path(value).is_absolute() else Path(value)
        if not full.is_file():
            check.error(f"identity.{key}", f"{full}: no such file")
        return full

    required = tuple(check.strings(table.get("required_claims", ["exp", "iss", "aud"]), "identity.required_claims"))
    if "exp" not in required:
        check.error("identity.required_claims", "must include 'exp': a token without expiry is never accepted")
    if check.problems or issuer is None:
        return None
    config = TokenConfig(
        issuer=issuer,
        audience=audience,
        algorithms=algorithms,
        source=source,
        jwks_url=url,
        jwks_file=path("jwks_file"),
        public_key_file=path("public_key_file"),
        hmac_secret_env=secret_env,
        leeway_seconds=_default(check.integer(table.get("leeway_seconds"), "identity.leeway_seconds", 0), 30),
        required_claims=required,
        min_assurance=level,
        trust_frameworks=frameworks,
        max_verification_age_days=max_age,
        top_level_claims=top_level,
        websocket_grace_seconds=_default(
            check.integer(table.get("websocket_grace_seconds"), "identity.websocket_grace_seconds", 0), 0
        ),
        max_token_bytes=check.integer(table.get("max_token_bytes"), "identity.max_token_bytes") or 8192,
        jwks_refresh_seconds=check.integer(table.get("jwks_refresh_seconds"), "identity.jwks_refresh_seconds") or 300,
        claim_names=names,
    )
    if not check.problems:
        _check_keys(config, check)
    return config


def _top_level(table: Mapping[str, Any], requirements: bool, check: Checker) -> TopLevelClaims:
    """``top_level_claims``: "fallback" by default, "never" whenever assurance requirements are set (top-level
    claims carry no ``verification`` to meet them)."""
    value = check.string(table.get("top_level_claims"), "identity.top_level_claims", TOP_LEVEL_CLAIMS)
    if value == "fallback" and requirements:
        check.error(
            "identity.top_level_claims",
            "'fallback' cannot be combined with min_assurance, trust_frameworks or max_verification_age_days: "
            "top-level claims carry no verification to meet them",
        )
    return "never" if value == "never" or requirements else "fallback"


def _check_keys(config: TokenConfig, check: Checker) -> None:
    """Load the key file and, when its variable is set, measure the HMAC secret: weak keys are policy errors."""
    where = "identity.jwks_file" if config.jwks_file is not None else "identity.public_key_file"
    try:
        if config.key_files:  # reading keys needs cryptography: loaded only for a policy that names a key file
            from ..identity.tokens import load_key_files

            load_key_files(config)
    except IdentityError as exc:
        check.error(where, str(exc))
    secret = os.environ.get(config.hmac_secret_env) if config.hmac_secret_env else None
    if secret:
        try:
            check_hmac_secret(secret.encode(), config.algorithms, f"environment variable {config.hmac_secret_env}")
        except IdentityError as exc:
            check.error("identity.hmac_secret_env", str(exc))


def _default(value: int | None, default: int) -> int:
    return default if value is None else value
