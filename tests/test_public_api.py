"""The public API: what the README uses is importable from ``geofence`` itself, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import geofence

README_NAMES = (
    "GeofenceMiddleware", "Decision", "DenialResponse", "ClaimNames", "Identity", "IdentityError", "Locator",
    "Location", "Policy", "PolicyError", "check_class", "require_class", "requires_class", "install_handler",
    "GeofenceDenied", "decide", "identity_from_claims", "load_policy", "parse_policy",
)  # fmt: skip


def test_what_the_readme_uses_is_exported() -> None:
    missing = [name for name in README_NAMES if name not in geofence.__all__ or not hasattr(geofence, name)]
    assert missing == []


def test_importing_geofence_loads_no_framework_and_no_token_library() -> None:
    heavy = ("starlette", "fastapi", "jwt", "cryptography")
    script = f"import sys, geofence\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
