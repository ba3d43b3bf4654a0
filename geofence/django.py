"""``geofence.django``: per-endpoint requirements for Django views (the public path of
:mod:`geofence.frameworks.django`)."""

from .frameworks.django import require_class

__all__ = ["require_class"]
