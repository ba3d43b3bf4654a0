"""What ``[identity]`` configures for tokens, without the libraries that verify them.

The policy parser reads and checks this; PyJWT and cryptography (~30 ms to import) load only when a policy
with a key source is put to use (:mod:`geofence.identity.tokens`), so ``import geofence`` and a policy without
``[identity]`` never pay for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .claims import AssuranceRequirements, ClaimNames, IdentityError, TopLevelClaims

__all__ = ["HMAC_MIN_BYTES", "SUPPORTED_ALGORITHMS", "TokenConfig", "check_hmac_secret"]

SUPPORTED_ALGORITHMS: Final = (
    "ES256", "ES256K", "ES384", "ES512", "ES521", "EdDSA", "HS256", "HS384", "HS512",
    "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
)  # fmt: skip
"""PyJWT's algorithms with cryptography installed, less ``none`` (a test keeps the two lists equal)."""
# RFC 7518 §3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}


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
    top_level_claims: TopLevelClaims = "fallback"
    """Read top-level claims when a token has no ``verified_claims``; ignored (never) with requirements."""
    websocket_grace_seconds: int = 0
    """How long a WebSocket allowed on a token may stay open after the token expires (then: close 1008)."""
    max_token_bytes: int = 8192
    jwks_refresh_seconds: int = 300
    jwks_min_refresh_seconds: int = 30
    claim_names: ClaimNames = field(default_factory=ClaimNames)

    @property
    def key_files(self) -> tuple[Path, ...]:
        """Files whose change means new keys (watched by the middleware for rotation without restart)."""
        return tuple(p for p in (self.jwks_file, self.public_key_file) if p is not None)

    @property
    def requirements(self) -> AssuranceRequirements:
        return AssuranceRequirements(self.min_assurance, self.trust_frameworks, self.max_verification_age_days)


def check_hmac_secret(secret: bytes, algorithms: Iterable[str], where: str) -> None:
    """Refuse a secret shorter than the longest hash output among the HMAC *algorithms* (RFC 7518 §3.2)."""
    for algorithm in sorted(HMAC_MIN_BYTES, key=HMAC_MIN_BYTES.__getitem__, reverse=True):
        if algorithm in algorithms and len(secret) < HMAC_MIN_BYTES[algorithm]:
            raise IdentityError(
                f"{where}: HMAC secret of {len(secret)} bytes is too weak; {algorithm} needs at least "
                f"{HMAC_MIN_BYTES[algorithm]} (RFC 7518 §3.2)"
            )
