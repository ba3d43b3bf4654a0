"""The client address: strict address parsing, the special-purpose ranges, and the trusted-proxy walk.

See docs/architecture.md for where this package sits in the request's way."""
