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
from .identity import ClaimNames, Identity, IdentityError, identity_from_claims
from .integrations import GeofenceDenied, check_class, install_handler, require_class, requires_class
from .location import Anonymizer, DatabaseInfo, Location
from .locator import Locator
from .middleware import GeofenceMiddleware
from .policy import Policy, PolicyError, load_policy, parse_policy
from .responses import DenialResponse

__version__ = "0.1.0"

__all__ = [
    "Anonymizer",
    "ClaimNames",
    "DatabaseError",
    "DatabaseInfo",
    "Decision",
    "DenialResponse",
    "GeofenceDenied",
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
    "check_class",
    "decide",
    "default_database_path",
    "error_decision",
    "identity_from_claims",
    "install_handler",
    "load_policy",
    "open_database",
    "parse_address",
    "parse_policy",
    "require_class",
    "requires_class",
]
