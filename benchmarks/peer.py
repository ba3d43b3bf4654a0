"""The peer measured beside geofence: fastapi-guard (PyPI ``fastapi-guard``), country blocking only.

Same FastAPI app, same database (the bundled DB-IP Lite country mmdb, read with ``maxminddb`` through
fastapi-guard's pluggable ``GeoIPHandler`` protocol), same embargoed countries blocked. Everything else it
does is switched off: Redis, rate limiting, IP banning, penetration detection, cloud-provider blocking,
user-agent rules, security headers, per-request logging. Two of its middlewares are measured: the documented
``SecurityMiddleware`` (a Starlette ``BaseHTTPMiddleware``) and ``PureASGISecurityMiddleware``.
"""

from __future__ import annotations

import logging
from typing import Any

import maxminddb

from geofence.geoip.databases import default_database_path

EMBARGOED = frozenset({"CU", "IR", "KP", "SY", "RU", "BY"})  # the countries of the example policy's "embargoed"
MIDDLEWARES = {"guard": "SecurityMiddleware", "guard_asgi": "PureASGISecurityMiddleware"}


def available() -> str | None:
    """fastapi-guard's version, or None when it is not installed."""
    try:
        from importlib.metadata import version

        import guard  # noqa: F401
    except ImportError:
        return None
    return version("fastapi-guard")


class MaxmindCountry:
    """fastapi-guard's ``GeoIPHandler`` protocol over a local mmdb read with ``maxminddb``, no cache.

    Reads GeoIP2/GeoLite2-style records (``country.iso_code``) and DB-IP Lite's flat ``country_code``.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or str(default_database_path())
        self.reader: Any = None

    @property
    def is_initialized(self) -> bool:
        return self.reader is not None

    async def initialize(self) -> None:
        self.reader = maxminddb.open_database(self.path, maxminddb.MODE_MMAP_EXT)

    async def initialize_redis(self, redis_handler: Any) -> None:
        pass

    async def initialize_agent(self, agent_handler: Any) -> None:
        pass

    def get_country(self, ip: str) -> str | None:
        if self.reader is None:
            return None
        try:
            record = self.reader.get(ip)
        except ValueError:
            return None
        if not record:
            return None
        code = record.get("country_code")
        if code is None:
            code = (record.get("country") or {}).get("iso_code")
        return str(code) if code else None

    async def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


class _Quiet(logging.Filter):
    """Drop fastapi-guard's start-up notes (every per-request log is switched off in its config)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def config(handler: MaxmindCountry | None = None, trusted_proxies: tuple[str, ...] = ()) -> Any:
    from guard import SecurityConfig

    for name in ("guard_core", "guard_core.core.initialization"):  # it resets levels at start-up; filters stay
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Quiet) for f in logger.filters):
            logger.addFilter(_Quiet())
    return SecurityConfig(
        geo_ip_handler=handler or MaxmindCountry(),
        blocked_countries=EMBARGOED,
        trusted_proxies=trusted_proxies,
        enable_redis=False,
        enable_rate_limiting=False,
        enable_ip_banning=False,
        enable_penetration_detection=False,
        enable_cors=False,
        block_cloud_providers=None,
        blocked_user_agents=[],
        security_headers=None,
        log_suspicious_level=None,
        log_request_level=None,
        log_country_check_level=None,
        exclude_paths=[],
    )


def guarded(app: Any, middleware: str = "guard", trusted_proxies: tuple[str, ...] = ()) -> Any:
    """*app* (a FastAPI app) with fastapi-guard added the documented way, ``app.add_middleware``."""
    import guard

    app.add_middleware(getattr(guard, MIDDLEWARES[middleware]), config=config(trusted_proxies=trusted_proxies))
    return app
