"""The action: the pure-ASGI middleware and what it glues together per request (pass, 451, record).

See docs/architecture.md for where this package sits in the request's way."""
