"""Token verification keys: loaded from JWKS documents and PEM files, and refused when too weak (RFC 7518 §3).

A key too weak for its algorithm lets whoever can factor or brute-force it forge any identity. A weak key the
operator configured (a key file, the HMAC secret) is a load error naming the key, so it is fixed before it is
trusted; a weak key in a JWKS fetched at run time is skipped with a warning naming its ``kid``, so the IdP's
other keys keep working. A key also has to fit the token's algorithm: an EC key only verifies the ``ES*``
algorithm of its own curve, and a JWK that names an ``alg`` only verifies that algorithm.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from .claims import IdentityError
from .config import HMAC_MIN_BYTES, check_hmac_secret

__all__ = ["HMAC_MIN_BYTES", "MIN_RSA_BITS", "KeySet", "VerificationKey", "check_hmac_secret", "family", "jwks_keys",
           "pem_keys"]  # fmt: skip

log = logging.getLogger("geofence")

MIN_RSA_BITS: Final = 2048
# RFC 7518 §3.4 and RFC 8812 §3.2: the one curve each ECDSA algorithm uses (cryptography's curve names).
EC_CURVES: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1", "ES256K": "secp256k1"}
_FAMILIES: Final = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def family(algorithm: str) -> str:
    """The JWK key type an algorithm verifies with (``?`` for none)."""
    return _FAMILIES.get(algorithm[:2], "?")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    family: str
    key: Any
    alg: str | None = None
    """The JWK's ``alg``, when it names one: the key then verifies that algorithm only."""

    def misfit(self, algorithm: str) -> str | None:
        """Why this key must not verify a token of *algorithm*, or None."""
        name = repr(self.kid) if self.kid is not None else "(no kid)"
        if self.alg is not None and self.alg != algorithm:
            return f"signing key {name} is for {self.alg[:20]}, not {algorithm}"
        if self.family == "EC" and self.key.curve.name != EC_CURVES.get(algorithm):
            return f"signing key {name} is on curve {self.key.curve.name}, which {algorithm} does not use"
        return None


def weakness(key: Any) -> str | None:
    """Why *key* is too weak to trust, or None."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} needed)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in EC_CURVES.values():
        return f"EC curve {key.curve.name} is not one any allowed algorithm uses"
    return None


def jwks_keys(document: Any, source: str, *, strict: bool) -> list[VerificationKey]:
    """The signature keys of a JWKS document. A weak key is an error when *strict* (a configured file), else
    skipped with a warning (a document fetched at run time)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise IdentityError(f"{source}: not a JWKS document (no 'keys' list)")
    out = []
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        try:
            parsed = jwt.PyJWK(dict(jwk))
        except Exception as exc:  # PyJWK raises NotImplementedError for alg "none": skip it like any bad key
            log.warning("geofence: %s: skipping an unusable key %r: %s", source, kid, exc)
            continue
        if parsed.key_type == "oct":
            continue  # a symmetric key published in a JWKS is never trusted
        problem = weakness(parsed.key)
        if problem is not None:
            if strict:
                raise IdentityError(f"{source}: key {kid!r} is too weak: {problem}")
            log.warning("geofence: %s: skipping key %r: too weak: %s", source, kid, problem)
            continue
        alg = jwk.get("alg")
        out.append(VerificationKey(kid, str(parsed.key_type), parsed.key, alg if isinstance(alg, str) else None))
    return out


def pem_keys(path: Path) -> list[VerificationKey]:
    """The one public key of a PEM file (it names no kid)."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: not a PEM public key ({exc})") from None
    problem = weakness(key)
    if problem is not None:
        raise IdentityError(f"{path}: key is too weak: {problem}")
    if isinstance(key, rsa.RSAPublicKey):
        return [VerificationKey(None, "RSA", key)]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [VerificationKey(None, "EC", key)]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return [VerificationKey(None, "OKP", key)]
    raise IdentityError(f"{path}: unsupported key type {type(key).__name__}")


class KeySet:
    """Verification keys by family and kid. Replaced as a whole, so readers never see a half-loaded set."""

    def __init__(self, keys: list[VerificationKey]) -> None:
        self.by_kid: dict[tuple[str, str | None], VerificationKey] = {}
        self.by_family: dict[str, list[VerificationKey]] = {}
        for key in keys:
            self.by_kid[(key.family, key.kid)] = key
            self.by_family.setdefault(key.family, []).append(key)
        self.material = frozenset((k.family, k.kid, k.alg, _public_bytes(k.key)) for k in keys)
        """What the set vouches with: equal only for the same keys under the same kids (a kid reused for a new
        key after an emergency rotation is a change)."""

    def find(self, algorithm: str, kid: str | None) -> Any | None:
        """The key for a token: by kid; or the only key of the family when the token or the key has no kid
        (a PEM key names no kid). None when there is none; :class:`IdentityError` when the key found does not
        fit the algorithm."""
        kind = family(algorithm)
        found = self.by_kid.get((kind, kid)) if kid is not None else None
        if found is None:
            candidates = self.by_family.get(kind, [])
            if len(candidates) == 1 and (kid is None or (kind, None) in self.by_kid):
                found = candidates[0]
        if found is None:
            return None
        problem = found.misfit(algorithm)
        if problem is not None:
            raise IdentityError(problem)
        return found.key


def _public_bytes(key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a key (RSA, EC, Ed25519, Ed448; of its public half when a JWKS carried a
    private one), or the raw bytes of a secret. Never raises: a key it cannot read is unlike every other, so
    a set holding one always counts as changed (cached identities are dropped, never kept)."""
    if isinstance(key, bytes | bytearray):
        return bytes(key)
    try:
        public = key.public_key() if hasattr(key, "public_key") else key
        return bytes(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    except Exception:
        return f"unreadable {type(key).__name__} {id(key)}".encode()
