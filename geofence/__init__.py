"""geofence: decide, per request, whether the caller may receive export-controlled content.

Data flow: client address -> :class:`Location` (:class:`Locator`); verified claims -> :class:`Identity`;
method, host, path, body -> export class (the policy's routes); then :func:`decide` (a pure function of those
facts and the :class:`Policy`) -> :class:`Decision`. See README.md.
"""

from __future__ import annotations

from . import asgi, identity, moved, policy, request
from .asgi.middleware import GeofenceMiddleware
from .asgi.responses import DenialResponse
from .errors import DatabaseError, GeofenceError, InvalidAddressError
from .frameworks.endpoint import GeofenceDenied, check_class
from .frameworks.starlette import install_handler, require_class, requires_class
from .geoip.databases import default_database_path, open_database
from .geoip.location import Anonymizer, DatabaseInfo, Location
from .geoip.locator import Locator
from .identity.claims import ClaimNames, Identity, IdentityError, identity_from_claims
from .network.addresses import parse_address
from .policy.decision import Decision, Reason, decide, error_decision
from .policy.load import Policy, PolicyError, load_policy, parse_policy
from .request.ids import request_id
from .version import __version__

moved.install({"asgi": asgi, "identity": identity, "policy": policy, "request": request})  # 0.1's import paths

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
    "request_id",
    "require_class",
    "requires_class",
]
