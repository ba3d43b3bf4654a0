"""Identity-token cost: geofence's verification against PyJWT's own decode, and the cached per-request cost.

    python benchmarks/tokens.py [--n 2000] [--rounds 5]

For RS256 (2048-bit), ES256 (P-256) and EdDSA (Ed25519) tokens, in the same run:
  * ``PyJWT decode``: ``jwt.decode`` with the key, algorithm, issuer and audience (the floor for any verifier);
  * ``geofence cold``: a new token each time (verify, check assurance, read claims, cache);
  * ``geofence cached``: the same token again (extract from the headers, hash, cache hit).
Medians over rounds; ratios against PyJWT decode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofence.identity.tokens import TokenConfig, TokenVerifier, token_from_scope

ISSUER, AUDIENCE = "https://idp.example.com", "bench"
KEYS: dict[str, tuple[Any, Any]] = {
    "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "ES256": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
}


def tokens(algorithm: str, n: int) -> list[str]:
    private, _ = KEYS[algorithm]
    now = int(time.time())
    return [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": f"user-{i}",
                "exp": now + 3600,
                "us_person": i % 2 == 0,
                "nationalities": ["US" if i % 2 == 0 else "DE"],
            },
            private,
            algorithm=algorithm,
            headers={"kid": algorithm},
        )
        for i in range(n)
    ]


def per_call_us(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    start = time.perf_counter_ns()
    for item in items:
        fn(item)
    return (time.perf_counter_ns() - start) / len(items) / 1000


def _pyjwt(public: Any, algorithm: str) -> Callable[[str], object]:
    return lambda t: jwt.decode(t, public, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER)


def _cached(verifier: TokenVerifier) -> Callable[[Any], object]:
    return lambda scope: verifier.identity(token_from_scope(scope, "authorization", 8192) or "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp) / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{**cls.to_jwk(key.public_key(), as_dict=True), "kid": alg, "use": "sig"}
                                             for alg, (key, cls) in KEYS.items()]}))  # fmt: skip
        config = TokenConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_file=jwks)
        print(f"python {sys.version.split()[0]}, {args.n} tokens per round, median of {args.rounds} rounds\n")
        print(f"{'algorithm':<10} {'what':<44} {'µs/token':>9} {'vs PyJWT':>9}")
        for algorithm, (private, _) in KEYS.items():
            public = private.public_key()
            results: dict[str, list[float]] = {"pyjwt": [], "cold": [], "cached": []}
            for _ in range(args.rounds):
                batch = tokens(algorithm, args.n)
                results["pyjwt"].append(per_call_us(_pyjwt(public, algorithm), batch))
                verifier = TokenVerifier(config)
                results["cold"].append(per_call_us(verifier.identity, batch))
                scopes = [{"headers": [(b"host", b"api"), (b"authorization", f"Bearer {batch[0]}".encode())]}] * args.n
                results["cached"].append(per_call_us(_cached(verifier), scopes))
            base = statistics.median(results["pyjwt"])
            labels = {
                "pyjwt": "PyJWT decode (signature, iss, aud, exp)",
                "cold": "geofence, new token (verify + claims)",
                "cached": "geofence, same token again (per request)",
            }
            for key, label in labels.items():
                value = statistics.median(results[key])
                print(f"{algorithm:<10} {label:<44} {value:>9.2f} {value / base:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
