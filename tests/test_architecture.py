"""The tree follows the request's way (docs/architecture.md): every module on one floor, imports only down.

The floors come from the table in docs/architecture.md, so the page and the tree cannot drift apart: a module
missing from the table, listed twice, or importing sideways or upwards fails here.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from .docs_blocks import ROOT

PACKAGE = ROOT / "geofence"
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|[^|]*\|\s*(.+?)\s*\|\s*$")


def floors() -> dict[str, tuple[int, str]]:
    """Module name (``geofence.asgi.middleware``) -> (floor, package) from the page's table."""
    found: dict[str, tuple[int, str]] = {}
    duplicates = []
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        floor, package = int(match[1]), match[2]
        found.setdefault(package, (floor, package))  # a subpackage's __init__ sits with its modules
        for name in re.findall(r"`(\w+)`", match[3]):
            module = package if name == "__init__" else f"{package}.{name}"
            if module in found and module != package:
                duplicates.append(module)
            found[module] = (floor, package)
    assert duplicates == [], "listed twice in docs/architecture.md"
    return found


def tree() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports(module: str, path: Path) -> set[str]:
    """The geofence modules *module* imports, lazy and type-checking imports included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from . import demo`` imports the module demo, not the package's __init__ (the same for a package)
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in _MODULES else target for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in _MODULES)
    found.discard(module)
    return found


_MODULES = tree()


def test_every_module_is_on_the_page_exactly_once() -> None:
    listed = set(floors())
    assert sorted(set(_MODULES) - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - set(_MODULES)) == [], "docs/architecture.md lists modules that do not exist"


def _top_package(module: str, table: dict[str, tuple[int, str]]) -> tuple[int, str]:
    return table[module] if module in table else (-1, "")


@pytest.mark.parametrize("module", sorted(_MODULES))
def test_imports_only_go_down(module: str) -> None:
    table = floors()
    floor, package = _top_package(module, table)
    sideways = []
    for target in sorted(imports(module, _MODULES[module])):
        target_floor, target_package = _top_package(target, table)
        same = target_package == package or package.startswith(target_package + ".")  # a subpackage may use its parent
        if target_floor > floor or (target_floor == floor and not same):
            sideways.append(f"{target} (floor {target_floor} {target_package})")
    assert sideways == [], f"{module} (floor {floor} {package}) imports up or sideways"


def test_no_module_imports_itself_back() -> None:
    graph = {module: imports(module, path) for module, path in _MODULES.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_every_module_reads_in_one_sitting() -> None:
    long = {m: n for m, p in _MODULES.items() if (n := p.read_text().count("\n")) > 400}
    assert long == {}


def test_every_module_says_why_it_exists() -> None:
    assert [m for m, p in _MODULES.items() if not ast.get_docstring(ast.parse(p.read_text()))] == []
