"""geofence: decide, per request, whether the caller may receive export-controlled content.

This release resolves client addresses to jurisdictions (:class:`Locator`, :class:`Location`); see README.md.
"""

from __future__ import annotations

from .addresses import parse_address
from .databases import default_database_path, open_database
from .errors import DatabaseError, GeofenceError, InvalidAddressError
from .location import Anonymizer, DatabaseInfo, Location
from .locator import Locator

__version__ = "0.1.0"

__all__ = [
    "Anonymizer",
    "DatabaseError",
    "DatabaseInfo",
    "GeofenceError",
    "InvalidAddressError",
    "Location",
    "Locator",
    "__version__",
    "default_database_path",
    "open_database",
    "parse_address",
]
