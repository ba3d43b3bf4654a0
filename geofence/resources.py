"""Files bundled in ``data/``: inside the installed package (``geofence/data``) or at the top of a checkout."""

from __future__ import annotations

from pathlib import Path

from .errors import GeofenceError

__all__ = ["data_path"]

_HERE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The bundled file *name*; a clear error if the installation lost it."""
    for candidate in (_HERE / "data" / name, _HERE.parent / "data" / name):
        if candidate.is_file():
            return candidate
    raise GeofenceError(f"the bundled file {name} is missing from this installation")
