"""Evidence: the audit trail (writer, file, records, chart), Prometheus metrics, database freshness.

See docs/architecture.md for where this package sits in the request's way."""
