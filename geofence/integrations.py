"""``geofence.integrations``: per-endpoint requirements for Starlette and FastAPI apps, and the
framework-neutral core the others build on (the public path of :mod:`geofence.frameworks`)."""

from .frameworks.endpoint import GeofenceDenied, check_class, denial_parts, enforce_class
from .frameworks.starlette import install_handler, require_class, requires_class

__all__ = [
    "GeofenceDenied",
    "check_class",
    "denial_parts",
    "enforce_class",
    "install_handler",
    "require_class",
    "requires_class",
]
