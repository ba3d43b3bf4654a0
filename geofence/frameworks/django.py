"""Per-endpoint requirements for Django views served by Django's ASGI handler behind :class:`GeofenceMiddleware`.

``@require_class("4E091")`` on a view (sync or async) re-decides the request for that class from the facts the
middleware already gathered, like :func:`geofence.check_class`, and answers a denial with the middleware's own
451 / 401 / 503 as an ``HttpResponse``. The facts travel in the ASGI scope (``request.scope``), which only
Django's ASGI handler has: under WSGI, or with no middleware in front, the decorator raises RuntimeError on
every request — it never lets a request through that it could not decide.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse  # type: ignore[import-untyped]  # Django ships no types (django-stubs does)
from django.middleware.cache import FetchFromCacheMiddleware, UpdateCacheMiddleware  # type: ignore[import-untyped]

from ..asgi.middleware import MIDDLEWARE_KEY
from ..asgi.plumbing import private_cache_control
from .endpoint import denial_parts, enforce_class

__all__ = ["require_class"]

V = TypeVar("V", bound=Callable[..., Any])


def require_class(export_class: str) -> Callable[[V], V]:
    """A view decorator: answer the middleware's standard denial unless *export_class* is allowed.

    Django's own cache (``cache_page``, ``UpdateCacheMiddleware``) is keyed by URL, not by caller, and answers
    before this decorator runs: a response it stored for one caller would reach callers the class refuses. So
    Django is told never to store what this view answers, whatever other decorators do to its headers; and an
    allowed GET or HEAD of a class that can deny anyone is also marked ``Cache-Control: private`` for caches
    outside Django."""

    def decorate(view: V) -> V:
        if _cached(view):
            raise TypeError(
                f"geofence.django.require_class({export_class!r}) wraps a cached view ({view.__name__}): Django's "
                "cache would serve what it stored to callers the class refuses; put cache_page outside it, or "
                "remove it"
            )
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_view(request: Any, *args: Any, **kwargs: Any) -> Any:
                denied, private = _decide(request, export_class)
                if denied is not None:
                    return denied
                return _guarded(await view(request, *args, **kwargs), private)

            return cast(V, async_view)

        @functools.wraps(view)
        def sync_view(request: Any, *args: Any, **kwargs: Any) -> Any:
            denied, private = _decide(request, export_class)
            return denied if denied is not None else _guarded(view(request, *args, **kwargs), private)

        return cast(V, sync_view)

    return decorate


def _cached(view: Any) -> bool:
    """Whether Django's cache middleware wraps *view* (``cache_page`` and ``decorator_from_middleware``
    keep the middleware in the closures of the functions they return)."""
    seen: set[int] = set()
    pending = [view]
    while pending:
        fn = pending.pop()
        if id(fn) in seen or len(seen) > 200:
            continue
        seen.add(id(fn))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, UpdateCacheMiddleware | FetchFromCacheMiddleware):
                return True
            if callable(value):
                pending.append(value)
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            pending.append(wrapped)
    return False


def _decide(request: Any, export_class: str) -> tuple[Any, bool]:
    """(None, whether the response must be private) when allowed; else the middleware's own denial as an
    ``HttpResponse``."""
    scope = getattr(request, "scope", None)
    if scope is None:
        raise RuntimeError(
            "geofence.django.require_class needs Django's ASGI handler behind GeofenceMiddleware "
            "(this request has no ASGI scope: is it served by WSGI?)"
        )
    request._cache_update_cache = False  # what Django's FetchFromCacheMiddleware sets to keep a response out
    decision = enforce_class(scope, export_class)
    if decision.allowed:
        return None, scope["state"][MIDDLEWARE_KEY].private_for(decision, scope)
    status, headers, body = denial_parts(decision, scope)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response.headers[name] = value
    response.headers["content-length"] = str(len(body))
    return response, False


def _guarded(response: Any, private: bool) -> Any:
    if private:
        given = response.headers.get("Cache-Control")
        value = private_cache_control([given] if given else [])
        if value is not None:
            response.headers["Cache-Control"] = value
    return response
