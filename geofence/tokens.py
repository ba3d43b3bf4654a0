"""Verified identity from signed tokens: JWT verification with PyJWT, keys from JWKS (file or URL) or PEM.

Every check happens before any claim is read: size, algorithm allowlist (never ``none``; HMAC only with a
configured secret, never with a public key), signature with a key of the token's own algorithm family,
``iss``, ``aud``, ``exp``, ``nbf`` (small leeway) and the required claims; then the identity-assurance
requirements (assurance level, trust framework, verification age). Keys from a JWKS URL are fetched in a
background thread, never on the request path: an unknown ``kid`` triggers a rate-limited refresh and the
token is refused until the key is known; an unreachable JWKS leaves the cached keys in force.

Verified identities are cached by the SHA-256 of the token, never past its ``exp``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jwt
from jwt.algorithms import get_default_algorithms

from .identity import ClaimNames, Identity, IdentityError, identity_from_claims

__all__ = ["ASSURANCE_LEVELS", "TokenConfig", "TokenVerifier", "token_from_scope"]

log = logging.getLogger("geofence")

SUPPORTED_ALGORITHMS: Final = tuple(sorted(a for a in get_default_algorithms() if a != "none"))
_FAMILIES: Final = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# Ordered scales of assurance levels: NIST SP 800-63A IAL and eIDAS levels of assurance.
ASSURANCE_LEVELS: Final = (("ial1", "ial2", "ial3"), ("low", "substantial", "high"))
_CACHE_LIMIT: Final = 100_000


def _family(algorithm: str) -> str:
    return _FAMILIES.get(algorithm[:2], "?")


@dataclass(frozen=True)
class TokenConfig:
    """The token half of ``[identity]`` (see README, "Verified identity")."""

    issuer: str
    audience: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    source: str = "authorization"
    jwks_url: str | None = None
    jwks_file: Path | None = None
    public_key_file: Path | None = None
    hmac_secret_env: str | None = None
    leeway_seconds: int = 30
    required_claims: tuple[str, ...] = ("exp", "iss", "aud")
    min_assurance: str | None = None
    trust_frameworks: tuple[str, ...] = ()
    max_verification_age_days: int | None = None
    max_token_bytes: int = 8192
    jwks_refresh_seconds: int = 300
    jwks_min_refresh_seconds: int = 30
    claim_names: ClaimNames = field(default_factory=ClaimNames)

    @property
    def key_files(self) -> tuple[Path, ...]:
        """Files whose change means new keys (watched by the middleware for rotation without restart)."""
        return tuple(p for p in (self.jwks_file, self.public_key_file) if p is not None)


class _Keys:
    """Verification keys by family and kid. Replaced as a whole, so readers never see a half-loaded set."""

    def __init__(self, keys: list[tuple[str | None, str, Any]]) -> None:
        self.by_kid: dict[tuple[str, str | None], Any] = {}
        self.by_family: dict[str, list[Any]] = {}
        for kid, family, key in keys:
            self.by_kid[(family, kid)] = key
            self.by_family.setdefault(family, []).append(key)

    def find(self, algorithm: str, kid: str | None) -> Any | None:
        """The key for a token: by kid; or the only key of the family when the token or the key has no kid
        (a PEM key names no kid)."""
        family = _family(algorithm)
        if kid is not None and (family, kid) in self.by_kid:
            return self.by_kid[(family, kid)]
        candidates = self.by_family.get(family, [])
        if len(candidates) == 1 and (kid is None or (family, None) in self.by_kid):
            return candidates[0]
        return None


def _jwks_keys(document: Any, source: str) -> list[tuple[str | None, str, Any]]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise IdentityError(f"{source}: not a JWKS document (no 'keys' list)")
    out = []
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig":
            continue
        try:
            parsed = jwt.PyJWK(dict(jwk))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("geofence: %s: skipping an unusable key %r: %s", source, jwk.get("kid"), exc)
            continue
        if parsed.key_type == "oct":
            continue  # a symmetric key published in a JWKS is never trusted
        kid = jwk.get("kid")
        out.append((kid if isinstance(kid, str) else None, str(parsed.key_type), parsed.key))
    return out


def _pem_key(path: Path) -> list[tuple[str | None, str, Any]]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return [(None, "RSA", key)]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [(None, "EC", key)]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return [(None, "OKP", key)]
    raise IdentityError(f"{path}: unsupported key type {type(key).__name__}")


def token_from_scope(scope: Mapping[str, Any], source: str, max_bytes: int) -> str | None:
    """The raw token from the request, or None. Duplicates and malformed values are errors, not guesses."""
    kind, _, name = source.partition(":")
    header = b"authorization" if kind == "authorization" else (b"cookie" if kind == "cookie" else name.encode())
    values = [v for k, v in scope["headers"] if k == header]
    if not values:
        return None
    if kind == "cookie":
        found = [
            part.split("=", 1)[1].strip()
            for line in values
            for part in line.decode("latin-1").split(";")
            if "=" in part and part.split("=", 1)[0].strip() == name
        ]
        if len(found) > 1:
            raise IdentityError(f"cookie {name!r} appears more than once")
        token = str(found[0]) if found else None
    else:
        if len(values) > 1:
            raise IdentityError(f"the request has {len(values)} {header.decode()} headers")
        token = values[0].decode("latin-1").strip()
        if kind == "authorization":
            scheme, _, credentials = token.partition(" ")
            if scheme.lower() != "bearer":
                return None  # another scheme (Basic ...) carries no identity for geofence
            token = credentials.strip()
    if token is None:
        return None
    if len(token) > max_bytes:
        raise IdentityError(f"token larger than {max_bytes} bytes")
    if not token:
        raise IdentityError("empty bearer token")
    return token


class TokenVerifier:
    """Verifies tokens and turns their claims into an :class:`Identity`, with a per-token cache."""

    def __init__(self, config: TokenConfig) -> None:
        self.config = config
        self._cache: dict[bytes, tuple[Identity, float]] = {}
        self._rejected: dict[bytes, tuple[str, float]] = {}  # so a replayed bad token costs no signature check
        self._secret: bytes | None = None
        if config.hmac_secret_env is not None:
            secret = os.environ.get(config.hmac_secret_env)
            if not secret:
                raise IdentityError(f"environment variable {config.hmac_secret_env} (HMAC secret) is not set")
            self._secret = secret.encode()
        self._keys = _Keys(self._load_local())
        self._fetched = 0.0
        self._attempted = 0.0
        self._fetching = threading.Lock()
        self.ready = threading.Event()
        if config.jwks_url is None:
            self.ready.set()
        else:
            self._refresh("start-up")

    # --- keys ---------------------------------------------------------------------------------------------

    def _load_local(self) -> list[tuple[str | None, str, Any]]:
        config = self.config
        if config.jwks_file is not None:
            try:
                document = json.loads(config.jwks_file.read_text())
            except (OSError, ValueError) as exc:
                raise IdentityError(f"{config.jwks_file}: cannot read JWKS ({exc})") from None
            return _jwks_keys(document, str(config.jwks_file))
        if config.public_key_file is not None:
            return _pem_key(config.public_key_file)
        return []

    def _refresh(self, why: str) -> None:
        """Fetch the JWKS URL in a background thread, at most once per ``jwks_min_refresh_seconds``."""
        now = time.monotonic()
        if now - self._attempted < self.config.jwks_min_refresh_seconds and self.ready.is_set():
            return
        if not self._fetching.acquire(blocking=False):
            return  # a fetch is already running
        self._attempted = now
        threading.Thread(target=self._fetch, args=(why,), name="geofence-jwks", daemon=True).start()

    def _fetch(self, why: str) -> None:
        url = self.config.jwks_url
        try:
            request = urllib.request.Request(url or "", headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                document = json.loads(response.read(1 << 20))
            keys = _jwks_keys(document, str(url))
            changed = set(self._keys.by_kid) != {(family, kid) for kid, family, _ in keys}
            self._keys = _Keys(keys)
            if changed:
                self._cache = {}  # a key withdrawn from the JWKS must stop vouching for cached identities
            self._fetched = time.monotonic()
            log.info("geofence: loaded %d signing keys from %s (%s)", len(keys), url, why)
        except (OSError, ValueError, IdentityError) as exc:
            log.error("geofence: cannot fetch JWKS from %s (%s): %s; keeping %d cached keys",
                      url, why, exc, len(self._keys.by_kid))  # fmt: skip
        finally:
            self._fetching.release()
            self.ready.set()

    # --- tokens -------------------------------------------------------------------------------------------

    def identity(self, token: str) -> Identity:
        """The verified identity of *token*; :class:`IdentityError` with the reason otherwise."""
        digest = hashlib.sha256(token.encode("latin-1", "replace")).digest()
        cached = self._cache.get(digest)
        now = time.time()
        if cached is not None and now < cached[1]:
            return cached[0]
        rejected = self._rejected.get(digest)
        if rejected is not None and now < rejected[1]:
            raise IdentityError(rejected[0])
        try:
            identity, expires = self._verify(token, now)
        except IdentityError as exc:
            if len(self._rejected) >= _CACHE_LIMIT:
                self._rejected.clear()
            if not str(exc).startswith(("unknown signing key", "no key")):  # may pass once the keys refresh
                self._rejected[digest] = (str(exc), now + 60)
            raise
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
        self._cache[digest] = (identity, expires)
        return identity

    def _verify(self, token: str, now: float) -> tuple[Identity, float]:
        config = self.config
        if len(token) > config.max_token_bytes:
            raise IdentityError(f"token larger than {config.max_token_bytes} bytes")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in config.algorithms:
            raise IdentityError(f"token algorithm {str(algorithm)[:20]!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise IdentityError("malformed token (kid)")
        if _family(algorithm) == "oct":
            key: Any = self._secret
        else:
            key = self._keys.find(algorithm, kid)
            if config.jwks_url is not None and time.monotonic() - self._fetched > config.jwks_refresh_seconds:
                self._refresh("periodic")
        if key is None:
            if config.jwks_url is not None:
                self._refresh(f"unknown kid {kid!r}")
            raise IdentityError(f"unknown signing key {str(kid)[:40]!r}" if kid else "no key for this token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(config.audience),
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": list(config.required_claims)},
            )
        except jwt.ExpiredSignatureError:
            raise IdentityError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise IdentityError("token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise IdentityError("token issuer not accepted") from None
        except jwt.InvalidAudienceError:
            raise IdentityError("token audience not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise IdentityError(f"token lacks required claim {exc.claim!r}") from None
        except jwt.InvalidSignatureError:
            raise IdentityError("token signature invalid") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError, TypeError, RecursionError):
            raise IdentityError("token rejected") from None
        self._check_assurance(claims, now)
        identity = identity_from_claims(claims, config.claim_names)
        try:
            expires = float(claims["exp"])  # PyJWT accepts a numeric string too; the cache must honour it
        except (KeyError, TypeError, ValueError):
            expires = now  # no readable expiry: verified now, never cached
        return identity, expires

    def _check_assurance(self, claims: Mapping[str, Any], now: float) -> None:
        config = self.config
        if config.min_assurance is None and not config.trust_frameworks and config.max_verification_age_days is None:
            return
        raw = claims.get("verified_claims")
        items = raw if isinstance(raw, list) else [raw] if isinstance(raw, Mapping) else []
        if not items:
            raise IdentityError("token has no verified_claims evidence")
        for item in items:
            verification = item.get("verification") if isinstance(item, Mapping) else None
            if not isinstance(verification, Mapping):
                raise IdentityError("verified_claims without verification")
            framework = verification.get("trust_framework")
            if config.trust_frameworks and framework not in config.trust_frameworks:
                raise IdentityError(f"trust framework {str(framework)[:40]!r} not accepted")
            if config.min_assurance is not None and not _at_least(
                verification.get("assurance_level"), config.min_assurance
            ):
                raise IdentityError(f"assurance level below {config.min_assurance}")
            if config.max_verification_age_days is not None:
                when = _timestamp(verification.get("time"))
                if when is None:
                    raise IdentityError("verification time missing or malformed")
                if now - when > config.max_verification_age_days * 86400:
                    raise IdentityError(f"identity verified more than {config.max_verification_age_days} days ago")


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read only to pick the algorithm and key (PyJWT then verifies the whole token).

    Parsed here rather than with ``jwt.get_unverified_header``, which decodes and validates every segment:
    that doubled the cost of verifying a new token."""
    segment, dot, _ = token.partition(".")
    try:
        if not dot or len(segment) > 2048:
            raise ValueError
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise IdentityError("malformed token") from None
    if not isinstance(header, dict):
        raise IdentityError("malformed token")
    return header


def _at_least(level: Any, minimum: str) -> bool:
    if not isinstance(level, str):
        return False
    for scale in ASSURANCE_LEVELS:
        if minimum in scale and level.lower() in scale:
            return scale.index(level.lower()) >= scale.index(minimum)
    return level.lower() == minimum


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
