"""The import paths of geofence 0.1 (one flat folder of modules) still work, each with a DeprecationWarning.

``tests/data/flat-0.1-names.json`` lists every public name of every 0.1 module, read off the 0.1 tree (the
commit before the subpackages): each must import from its old path and be the very object of its new home.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import geofence
from geofence import moved

NAMES: dict[str, list[str]] = json.loads((Path(__file__).parent / "data" / "flat-0.1-names.json").read_text())
KEPT = {"errors", "resources", "django", "litestar", "integrations"}  # modules still at their 0.1 path


def test_every_old_module_is_answered_or_still_there() -> None:
    assert set(NAMES) == set(moved.MOVED) | KEPT
    assert len(NAMES) == 55 and sum(len(v) for v in NAMES.values()) == 242


@pytest.mark.parametrize("old", sorted(NAMES))
def test_every_public_name_of_0_1_imports_from_its_old_path(old: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(f"geofence.{old}")
        for name in NAMES[old]:
            value = getattr(module, name)
            homes = [importlib.import_module(f"geofence.{t}") for t in moved.MOVED.get(old, ())]
            assert old in KEPT or any(vars(home).get(name) is value for home in homes), (old, name)


def fresh_process(*lines: str) -> str:
    """What a new interpreter running *lines* prints (warnings are once per process)."""
    done = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, check=True)
    return done.stdout


def test_an_old_path_warns_once_and_names_the_new_one() -> None:
    printed = fresh_process(
        "import warnings; warnings.simplefilter('error', DeprecationWarning)",
        "try:\n    from geofence.locator import Locator\nexcept DeprecationWarning as e: print(e)",
        "warnings.simplefilter('ignore', DeprecationWarning)",
        "from geofence.recording import request_id\nimport geofence\nassert request_id is geofence.request_id",
    )
    assert "geofence.locator is the import path of geofence 0.1: use geofence.geoip.locator" in printed


def test_new_paths_do_not_warn_and_unknown_names_still_fail() -> None:
    printed = fresh_process(
        "import warnings; warnings.simplefilter('error')",
        "from geofence import Locator, load_policy, request_id\nfrom geofence.policy.load import Policy",
        "import geofence.policy",
        "try:\n    geofence.policy.no_such_name\nexcept AttributeError as e: print('AttributeError', e)",
    )
    assert "AttributeError module 'geofence.policy' has no attribute 'no_such_name'" in printed
    with pytest.raises(ImportError):
        importlib.import_module("geofence.no_such_module")
    assert geofence.Locator is importlib.import_module("geofence.geoip.locator").Locator
