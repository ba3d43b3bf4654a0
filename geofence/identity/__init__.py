"""Identity: verified claims -> :class:`Identity`; signed tokens and their keys (PyJWT, imported lazily).

See docs/architecture.md for where this package sits in the request's way."""
