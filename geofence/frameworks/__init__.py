"""Per-endpoint requirements for Starlette/FastAPI, Litestar and Django, on one framework-neutral core."""
