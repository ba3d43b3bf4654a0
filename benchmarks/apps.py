"""The apps the middleware benchmark serves: a bare Starlette hello-world, and the same app behind geofence.

``python -m uvicorn benchmarks.apps:bare`` / ``benchmarks.apps:protected`` (run from the repository root).
The protected app uses the bundled database and example policy, trusting 127.0.0.1 as a proxy so the load
generator can send X-Forwarded-For.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from geofence.demo import demo_policy
from geofence.middleware import GeofenceMiddleware


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def make_bare() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", hello, methods=["GET", "POST"])])


bare = make_bare()
protected = GeofenceMiddleware(make_bare(), config=demo_policy(None))
