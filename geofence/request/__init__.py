"""The scope: what a request *is*, read once (method, path, host, peer, forwarding headers), and its one id.

See docs/architecture.md for where this package sits in the request's way."""
