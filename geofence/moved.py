"""The import paths of geofence 0.1, whose modules were one flat folder: kept working, with a warning.

``geofence.locator`` is now ``geofence.geoip.locator``, ``geofence.recording.request_id`` is
``geofence.request_id``, and so on. An old module path imports a stand-in that finds each name in the modules
that hold it now; the four old modules whose names are packages now (``asgi``, ``identity``, ``policy``,
``request``) answer their old names the same way. Each old path warns once (``DeprecationWarning``). Installed
by ``geofence/__init__.py``: this is the top of the tree, so it may name any module (by string, at first use).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any, Final

__all__ = ["MOVED", "install"]

MOVED: Final[dict[str, tuple[str, ...]]] = {
    "addresses": ("network.addresses",),
    "asgi": ("asgi.plumbing",),
    "audit": ("evidence.audit",),
    "audit_chart": ("evidence.chart",),
    "audit_file": ("evidence.trail",),
    "audit_records": ("evidence.records", "evidence.audit"),
    "budget": ("caches.budget",),
    "cache": ("caches.bounded",),
    "cli": ("cli.main",),
    "cli_audit": ("cli.audit",),
    "cli_check": ("cli.check",),
    "cli_db": ("cli.db",),
    "cli_update": ("cli.update",),
    "client_ip": ("network.client_ip",),
    "databases": ("geoip.databases", "geoip.records"),
    "deciding": ("asgi.deciding",),
    "decision": ("policy.decision",),
    "demo": ("cli.demo",),
    "destinations": ("places",),
    "downloads": ("geoip.update.downloads",),
    "freshness": ("evidence.freshness",),
    "geoipconf": ("geoip.update.conf", "cli.update"),
    "health": ("asgi.health",),
    "identity": ("identity.claims", "policy.identity"),
    "keys": ("identity.keys", "identity.config"),
    "location": ("geoip.location",),
    "locator": ("geoip.locator",),
    "metrics": ("evidence.metrics",),
    "middleware": ("asgi.middleware",),
    "netcache": ("caches.networks",),
    "params": ("routing.params", "routing.rule", "policy.route_rules"),
    "policy": ("policy.load", "policy.classes", "policy.audit", "evidence.records", "cli.demo"),
    "policy_audit": ("policy.audit",),
    "policy_checks": ("policy.checks", "evidence.records"),
    "policy_classes": ("policy.classes",),
    "policy_identity": ("policy.identity",),
    "policy_response": ("policy.response",),
    "policy_routes": ("policy.route_rules",),
    "recording": ("asgi.recording", "request.ids"),
    "records": ("geoip.records",),
    "reloader": ("asgi.reloader",),
    "request": ("request.facts", "request.ids", "asgi.middleware"),
    "responses": ("asgi.responses",),
    "route_index": ("routing.index",),
    "routes": ("routing.routes", "routing.rule", "routing.params", "policy.route_rules"),
    "state": ("asgi.state",),
    "token_config": ("identity.config",),
    "tokens": ("identity.tokens", "identity.config"),
    "updates": ("geoip.update.updater", "errors"),
    "where": ("asgi.where",),
}
"""Old module (under ``geofence.``) -> the modules that hold its names now, searched in order."""

_PACKAGES: Final = frozenset({"asgi", "identity", "policy", "request"})  # old modules whose names are packages now
_warned: set[str] = set()


def _find(old: str, name: str) -> Any:
    """*name* of old module *old*, from where it lives now; AttributeError as a module would raise it."""
    for target in MOVED[old]:
        module = importlib.import_module(f"geofence.{target}")
        if name in vars(module):
            if old not in _warned:
                _warned.add(old)
                where = ", ".join(f"geofence.{t}" for t in MOVED[old])
                warnings.warn(
                    f"geofence.{old} is the import path of geofence 0.1: use {where} (or `from geofence import ...`)",
                    DeprecationWarning,
                    stacklevel=3,
                )
            return vars(module)[name]
    raise AttributeError(f"module 'geofence.{old}' has no attribute {name!r}")


class _Moved(ModuleType):
    """The stand-in for an old module: each attribute found where it lives now."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _find(self.__name__.removeprefix("geofence."), name)
        setattr(self, name, value)  # found once
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``geofence.<old>`` as a :class:`_Moved` for the old modules that are not packages now."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix("geofence.")
        if fullname.startswith("geofence.") and old in MOVED and old not in _PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return _Moved(spec.name, f"The geofence 0.1 path of {', '.join(MOVED[spec.name[9:]])} (deprecated).")

    def exec_module(self, module: ModuleType) -> None:
        pass


def install(packages: dict[str, ModuleType]) -> None:
    """Answer the old paths: the finder, and a module ``__getattr__`` on each package named like an old module
    (*packages*: those packages, imported)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())  # last: a real module of that name always wins
    for old, package in packages.items():

        def attribute(name: str, old: str = old) -> Any:
            return _find(old, name)

        package.__getattr__ = attribute  # type: ignore[method-assign]
