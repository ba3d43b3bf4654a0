"""The native request path (``_core.c``): chosen automatically when it was built, the pure-Python reference
otherwise.

The C module answers only the common, unambiguous cases (a plain header list, a plain client address or
X-Forwarded-For chain, a database record seen before) and hands everything else to the Python reference, which
stays the definition of every answer: ``tests/test_native.py`` holds the two to the same results. Set
``GEOFENCE_NATIVE=0`` to run the reference alone (for comparison, or to rule the extension out).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["core", "describe", "missing"]


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("GEOFENCE_NATIVE", "1") == "0":
        return None, "pure Python (GEOFENCE_NATIVE=0)"
    try:
        from . import _core  # type: ignore[attr-defined]
    except ImportError:
        return None, "pure Python (the native extension was not built: no C compiler at install?)"
    return _core, "native (C extension geofence.native._core)"


core, _description = _load()


def describe() -> str:
    """Which request path this process runs, for ``geofence --version`` and the health report."""
    return _description


def missing() -> bool:
    """Whether the extension was wanted but not built (the middleware then says so once, at start)."""
    return core is None and os.environ.get("GEOFENCE_NATIVE", "1") != "0"
