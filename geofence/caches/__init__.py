"""The ground floor: bounded caches for the request path and the one memory budget they share.

See docs/architecture.md for where this package sits in the request's way."""
