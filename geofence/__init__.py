"""geofence: decide, per request, whether the caller may receive export-controlled content.

Data flow: client address -> :class:`Location` (:class:`Locator`); verified claims -> :class:`Identity`;
method, host, path, body -> export class (the policy's routes); then :func:`decide` (a pure function of those
facts and the :class:`Policy`) -> :class:`Decision`. See README.md.
"""

from __future__ import annotations

from .addresses import parse_address
from .databases import default_database_path, open_database
from .decision import Decision, Reason, decide, error_decision
from .errors import DatabaseError, GeofenceError, InvalidAddressError
from .identity import Identity, IdentityError, identity_from_claims
from .location import Anonymizer, DatabaseInfo, Location
from .locator import Locator
from .middleware import GeofenceMiddleware
from .policy import Policy, PolicyError, load_policy, parse_policy

__version__ = "0.1.0"

__all__ = [
    "Anonymizer",
    "DatabaseError",
    "DatabaseInfo",
    "Decision",
    "GeofenceError",
    "GeofenceMiddleware",
    "Identity",
    "IdentityError",
    "InvalidAddressError",
    "Location",
    "Locator",
    "Policy",
    "PolicyError",
    "Reason",
    "__version__",
    "decide",
    "default_database_path",
    "error_decision",
    "identity_from_claims",
    "load_policy",
    "open_database",
    "parse_address",
    "parse_policy",
]
