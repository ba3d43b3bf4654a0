"""The decision: the policy file loaded, validated and compiled, and ``decide``, a pure function of it.

See docs/architecture.md for where this package sits in the request's way."""
