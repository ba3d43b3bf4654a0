"""The export class: route rules over method, host, every path spelling and request parameters.

See docs/architecture.md for where this package sits in the request's way."""
