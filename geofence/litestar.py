"""``geofence.litestar``: per-endpoint requirements for Litestar apps (the public path of
:mod:`geofence.frameworks.litestar`)."""

from .frameworks.litestar import GeofenceDenied, exception_handlers, handle_denied, require_class

__all__ = ["GeofenceDenied", "exception_handlers", "handle_denied", "require_class"]
