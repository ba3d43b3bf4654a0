"""Keeping databases current: ``GeoIP.conf``, geoipupdate's protocol, and a validated swap in place."""
