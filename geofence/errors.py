"""Exceptions raised by geofence.

Every error a caller can cause carries a one-line message fit for a CLI or a log: no paths beyond the one the
caller gave, no tracebacks needed to understand it.
"""

from __future__ import annotations


class GeofenceError(Exception):
    """Base class of all errors geofence raises on purpose."""


class InvalidAddressError(GeofenceError, ValueError):
    """The text is not an IPv4 or IPv6 address."""


class DatabaseError(GeofenceError):
    """A GeoIP database is missing, unreadable, corrupt or of a schema geofence cannot use."""


class UpdateError(GeofenceError):
    """One edition could not be updated; the message is one line."""


class LockBusyError(GeofenceError):
    """Another updater (geofence or geoipupdate) holds the lock."""
