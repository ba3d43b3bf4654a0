"""The ``geofence`` command: thin shells over the library, one module per command family."""

from .main import main

__all__ = ["main"]
