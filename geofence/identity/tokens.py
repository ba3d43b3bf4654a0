"""Verified identity from signed tokens: JWT verification with PyJWT, keys from JWKS (file or URL) or PEM.

Every check happens before any claim is read: size, algorithm allowlist (never ``none``; HMAC only with a
configured secret, never with a public key), canonical base64url (so one token has one spelling, and the
caches keyed by it cannot be side-stepped), signature with a key of the token's own algorithm family that fits
the algorithm, ``iss``, ``aud``, ``exp``, ``nbf`` (small leeway) and the required claims; then the identity is
read from the ``verified_claims`` that meet the assurance requirements (see :mod:`geofence.identity.claims`). Keys
from a JWKS URL are fetched in a background thread, never on the request path: an unknown ``kid`` triggers a
rate-limited refresh and the token is refused until the key is known; an unreachable JWKS leaves the cached
keys in force. Key loading and strength checks live in :mod:`geofence.identity.keys`.

Verified identities are cached by the SHA-256 of the token, never past its ``exp``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

import jwt

from ..caches.bounded import BoundedCache
from ..caches.budget import CacheBudget
from ..native import core
from .claims import (
    Identity,
    IdentityError,
    identity_from_claims,
)
from .config import SUPPORTED_ALGORITHMS, TokenConfig
from .keys import KeySet, VerificationKey, check_hmac_secret, family, jwks_keys, pem_keys

__all__ = ["SUPPORTED_ALGORITHMS", "TokenConfig", "TokenVerifier", "load_key_files", "token_from_scope"]

log = logging.getLogger("geofence")

# Bounded with CLOCK eviction: a flood of distinct tokens evicts a little at a time, never the hot set at once.
_REJECTED_SECONDS: Final = 60
_LATEST_EXPIRY: Final = 253_402_300_800  # 10000-01-01T00:00:00Z
# Three non-empty base64url segments; each must also be canonical (see _canonical).
_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def load_key_files(config: TokenConfig) -> list[VerificationKey]:
    """The configured key file's keys; :class:`IdentityError` naming the file (and key) when one is unusable
    or too weak. Also run by the policy parser, so ``geofence policy validate`` reports it."""
    if config.jwks_file is not None:
        try:
            document = json.loads(config.jwks_file.read_text())
        except (OSError, ValueError) as exc:
            raise IdentityError(f"{config.jwks_file}: cannot read JWKS ({exc})") from None
        return jwks_keys(document, str(config.jwks_file), strict=True)
    if config.public_key_file is not None:
        return pem_keys(config.public_key_file)
    return []


def token_from_scope(scope: Mapping[str, Any], source: str, max_bytes: int) -> str | None:
    """The raw token from the request, or None. Duplicates and malformed values are errors, not guesses.

    Header names are case-insensitive (ASGI gives them in lower case); cookie names are case-sensitive."""
    kind, _, name = source.partition(":")
    kind = kind.lower()
    header = b"authorization" if kind == "authorization" else (b"cookie" if kind == "cookie" else name.lower().encode())
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

    def __init__(self, config: TokenConfig, budget: CacheBudget | None = None) -> None:
        self.config = config
        self._budget = budget or CacheBudget()
        self._cache: BoundedCache[bytes, Identity] = BoundedCache(*self._budget.identities())
        # With the native header scan: the exact Authorization value of a token verified before -> its identity,
        # so a repeat request neither reads nor hashes the token again (the full value is the key: no collision
        # can stand in for it). Forgotten with _cache, when the signing keys change.
        self._by_value: BoundedCache[bytes, Identity] | None = None
        self.generation = 0
        """Counts signing-key changes: what remembers an identity outside these caches checks it."""
        self.by_authorization = core is not None and config.source.lower() == "authorization"
        """Whether the token is the request's plain ``Authorization`` value, which may then stand for it: what
        remembers identities by another header or a cookie would answer for a token it never read."""
        if self.by_authorization:
            self._by_value = BoundedCache(*self._budget.small(4096))
        # So a replayed bad token costs no signature check: (reason, until).
        self._rejected: BoundedCache[bytes, tuple[str, float]] = BoundedCache(*self._budget.small(16_384))
        self._secret: bytes | None = None
        if config.hmac_secret_env is not None:
            secret = os.environ.get(config.hmac_secret_env)
            if not secret:
                raise IdentityError(f"environment variable {config.hmac_secret_env} (HMAC secret) is not set")
            self._secret = secret.encode()
            check_hmac_secret(self._secret, config.algorithms, f"environment variable {config.hmac_secret_env}")
        self._keys = KeySet(load_key_files(config))
        self._fetched = 0.0
        self._attempted = 0.0
        self._fetching = threading.Lock()
        self.ready = threading.Event()
        if config.jwks_url is None:
            self.ready.set()
        else:
            self._refresh("start-up")

    # --- keys ---------------------------------------------------------------------------------------------

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
            import urllib.request  # only with a JWKS URL: `import geofence` stays light

            request = urllib.request.Request(url or "", headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                document = json.loads(response.read(1 << 20))
            keys = KeySet(jwks_keys(document, str(url), strict=False))
            changed = keys.material != self._keys.material  # a kid reused for another key is a change too
            self._keys = keys
            if changed:  # a key withdrawn from the JWKS must stop vouching for cached identities
                self._cache = BoundedCache(*self._budget.identities())
                if self._by_value is not None:
                    self._by_value = BoundedCache(*self._budget.small(4096))
                # Last: whoever read the old generation may have used the old caches, and is voided by this;
                # whoever reads the new one finds only the new caches.
                self.generation += 1
            self._fetched = time.monotonic()
            log.info("geofence: loaded %d signing keys from %s (%s)", len(keys.by_kid), url, why)
        except Exception as exc:  # never let one surprise kill the refresh thread or the cached keys
            log.error("geofence: cannot fetch JWKS from %s (%s): %s; keeping %d cached keys",
                      url, why, exc, len(self._keys.by_kid))  # fmt: skip
        finally:
            self._fetching.release()
            self.ready.set()

    # --- tokens -------------------------------------------------------------------------------------------

    def identity_of(self, scope: Mapping[str, Any]) -> Identity | None:
        """The verified identity of a request's token, None without a token; :class:`IdentityError` for a
        rejected one. A plain bearer value verified before is answered by that exact value (expiry checked)."""
        by_value = self._by_value
        value = core.authorization(scope["headers"]) if by_value is not None else None  # type: ignore[union-attr]
        if value is not None:
            known = by_value.get(value)  # type: ignore[union-attr]
            if known is not None and known.expires is not None and time.time() < known.expires:
                return known
        token = self.token(scope)
        if token is None:
            return None
        identity = self.identity(token)
        if value is not None and identity.expires is not None and len(value) <= self.config.max_token_bytes + 7:
            by_value.put(value, identity, len(value))  # type: ignore[union-attr]
        return identity

    def token(self, scope: Mapping[str, Any]) -> str | None:
        """The raw token of a request, as :func:`token_from_scope` reads it; one pass over the headers for the
        usual ``Authorization: Bearer`` (anything else, or anything odd, takes the general reader)."""
        config = self.config
        if config.source.lower() != "authorization":
            return token_from_scope(scope, config.source, config.max_token_bytes)
        found = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if found is not None:
                    return token_from_scope(scope, config.source, config.max_token_bytes)  # raises
                found = value
        if found is None or found[:7].lower() != b"bearer " or len(found) > config.max_token_bytes + 7:
            return token_from_scope(scope, config.source, config.max_token_bytes)
        token = found[7:].decode("latin-1").strip()
        return token if token and " " not in token else token_from_scope(scope, config.source, config.max_token_bytes)

    def identity(self, token: str) -> Identity:
        """The verified identity of *token*; :class:`IdentityError` with the reason otherwise."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = time.time()
        cache = self._cache  # read once: a verification with the keys of before never lands in a newer cache
        cached = cache.get(digest)
        if cached is not None and cached.expires is not None and now < cached.expires:
            return cached
        rejected = self._rejected.get(digest)
        if rejected is not None and now < rejected[1]:
            raise IdentityError(rejected[0])
        try:
            identity = self._verify(token, now)
        except IdentityError as exc:
            reason = str(exc)
            if not reason.startswith(("unknown signing key", "no key")):  # may pass once the keys refresh
                self._rejected.put(digest, (reason, now + _REJECTED_SECONDS), len(reason))
            raise
        if identity.expires is not None:  # no readable expiry: verified now, never cached
            cache.put(digest, identity, 400 + 8 * len(identity.nationalities))
        return identity

    def _verify(self, token: str, now: float) -> Identity:
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
        if "crit" in header:  # RFC 7515 §4.1.11: geofence understands no extension, so none may be critical
            raise IdentityError("token has an unsupported critical header")
        if not _SHAPE.fullmatch(token) or not all(_canonical(part) for part in token.split(".")):
            raise IdentityError("malformed token (not three base64url segments)")
        if family(algorithm) == "oct":
            key: Any = self._secret
        else:
            key = self._keys.find(algorithm, kid)
            if config.jwks_url is not None and time.monotonic() - self._fetched > config.jwks_refresh_seconds:
                self._refresh("periodic")
        if key is None:
            if config.jwks_url is not None:
                self._refresh(f"unknown kid {kid!r}")
            raise IdentityError(f"unknown signing key {str(kid)[:40]!r}" if kid else "no key for this token")
        claims = _decode(token, key, algorithm, config)
        identity = identity_from_claims(
            claims, config.claim_names, top_level=config.top_level_claims, requirements=config.requirements, now=now
        )
        if "exp" not in claims:  # only where a TokenConfig built in code does not require it: never cached
            return identity
        try:
            expires = float(claims["exp"])  # PyJWT accepts a numeric string too; the cache must honour it
        except (TypeError, ValueError, OverflowError):
            raise IdentityError("token claim 'exp' is not a number") from None
        if not 0 < expires < _LATEST_EXPIRY:  # inf / 1e400 would be cached, and hold a WebSocket, forever
            raise IdentityError("token claim 'exp' is not a time before the year 10000")
        return dataclasses.replace(identity, expires=expires)


def _decode(token: str, key: Any, algorithm: str, config: TokenConfig) -> dict[str, Any]:
    """PyJWT's verification, with its exceptions turned into reasons a caller can act on."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=list(config.audience),
            issuer=config.issuer,
            leeway=config.leeway_seconds,
            options={"require": list(config.required_claims), "enforce_minimum_key_length": True},
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
    except jwt.InvalidIssuedAtError:
        raise IdentityError("token claim 'iat' is not a number") from None
    except jwt.exceptions.InvalidSubjectError:
        raise IdentityError("token claim 'sub' is not a string") from None
    except jwt.exceptions.InvalidJTIError:
        raise IdentityError("token claim 'jti' is not a string") from None
    except jwt.InvalidAlgorithmError:
        raise IdentityError("token algorithm not allowed") from None
    except jwt.InvalidKeyError as exc:
        weak = "minimum" in str(exc)  # PyJWT's key-length message ("below the minimum recommended ...")
        raise IdentityError("signing key too weak" if weak else "signing key does not fit the token") from None
    except jwt.DecodeError as exc:
        claim = next((c for c in ("exp", "nbf") if f"({c})" in str(exc)), None)
        raise IdentityError(f"token claim {claim!r} is not a number" if claim else "malformed token") from None
    except jwt.InvalidTokenError as exc:  # a kind not named above: say PyJWT's reason rather than nothing
        raise IdentityError(f"token rejected: {str(exc)[:80]}") from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise IdentityError("malformed token") from None
    return claims


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


def _canonical(segment: str) -> bool:
    """Whether a base64url segment is the one spelling of its bytes: unused trailing bits must be zero (RFC
    4648 §3.5), or the same token could be spelled several ways."""
    rest = len(segment) % 4
    return rest == 0 or (rest == 2 and segment[-1] in "AQgw") or (rest == 3 and segment[-1] in "AEIMQUYcgkosw048")
