"""Location: GeoIP databases opened and adapted, an address's location cached per network, and updates.

See docs/architecture.md for where this package sits in the request's way."""
