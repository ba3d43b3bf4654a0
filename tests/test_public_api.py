"""The public API: what the README uses is importable from ``geofence`` itself, and importing it stays light."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys

import geofence

from .docs_blocks import ROOT, all_blocks


def readme_names() -> set[str]:
    """Every name the README's Python examples import from ``geofence`` itself, or name in its prose."""
    names: set[str] = set()
    for block in all_blocks():
        if block.language != "python":
            continue
        for node in ast.walk(ast.parse(block.text)):
            if isinstance(node, ast.ImportFrom) and node.module == "geofence":
                names.update(alias.name for alias in node.names)
    names.update(re.findall(r"`from geofence import (\w+)", (ROOT / "README.md").read_text()))
    return names


def test_what_the_readme_uses_is_exported() -> None:
    names = readme_names()
    assert {"GeofenceMiddleware", "require_class", "decide", "Locator", "DenialResponse"} <= names
    missing = [name for name in sorted(names) if name not in geofence.__all__ or not hasattr(geofence, name)]
    assert missing == []


def _public_members(cls: type) -> list[tuple[str, object]]:
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(function):
            members.append((name, function))
    return members


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    missing = []
    for name in geofence.__all__:
        obj = getattr(geofence, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not own or own.startswith(f"{name}("):  # NamedTuple and dataclass make up a signature docstring
            missing.append(name)
        if inspect.isclass(obj):
            missing += [
                f"{name}.{member}"
                for member, function in _public_members(obj)
                if member != "__init__" and not getattr(function, "__doc__", None)
            ]
    assert missing == []


def test_importing_geofence_loads_no_framework_and_no_token_library() -> None:
    heavy = ("starlette", "fastapi", "jwt", "cryptography")
    script = f"import sys, geofence\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
