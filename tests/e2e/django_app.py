"""A minimal Django project for the framework tests: settings without a database, views that demand classes with
``geofence.django.require_class`` (sync and async), the same views under an ``include()`` prefix, and a view
the policy tags itself (to compare the decorator's denial with the middleware's own)."""

from __future__ import annotations

from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

from geofence.django import require_class  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="geofence-tests-only",
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
    )

from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.cache import cache_control, cache_page  # noqa: E402


def _class(request: HttpRequest) -> Any:
    decision = request.scope["state"]["geofence"]  # type: ignore[attr-defined]
    return decision.export_class


@require_class("4E091")
def weights_sync(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "sync", "class": _class(request)})


@require_class("4E091")
async def weights_async(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "async", "class": _class(request)})


@require_class("5E002")
async def person(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "person", "class": _class(request)})


@require_class("NO-SUCH-CLASS")
def unknown(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "unknown"})


def tagged(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "tagged", "class": _class(request)})


@cache_page(600)  # Django's own cache outside the requirement: it must never store a response for others
@require_class("4E091")
def cached(request: HttpRequest) -> HttpResponse:
    response = JsonResponse({"view": "cached", "class": _class(request)})
    response["Cache-Control"] = "public, max-age=600"
    return response


@cache_page(600)
@cache_control(public=True)  # outside the requirement: it turns a private response public again
@require_class("4E091")
def public_cached(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "public-cached", "class": _class(request)})


views = [
    path("cached", cached),
    path("public-cached", public_cached),
    path("weights-sync", weights_sync),
    path("weights-async", weights_async),
    path("person", person),
    path("unknown", unknown),
    path("tagged", tagged),
]
urlpatterns = [*views, path("shop/", include(views))]


def application() -> Any:
    """Django's ASGI handler for this project (call ``GeofenceMiddleware(application(), ...)`` around it)."""
    from django.core.asgi import get_asgi_application

    return get_asgi_application()
