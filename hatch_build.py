"""Build hook: compile geofence's native request path (geofence/native/_core.c) into the wheel.

One C file against the Python headers, with the C compiler Python was built with; no build dependency beyond
hatchling. (setuptools' build_ext would do the same through a second build system; a direct compile keeps one.)
Without a compiler, or with ``GEOFENCE_NATIVE_BUILD=0``, the wheel is pure Python and a one-line notice says so:
the package then runs its Python reference path, with the same answers, more slowly.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("geofence") / "native" / "_core.c"


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("GEOFENCE_NATIVE_BUILD") == "0":
            print("geofence: GEOFENCE_NATIVE_BUILD=0: installing the pure-Python request path only")
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        if version == "editable":  # the checkout is on sys.path: build beside the source
            target = root / "geofence" / "native" / f"_core{suffix}"
        else:
            target = Path(tempfile.mkdtemp(prefix="geofence-native-")) / f"_core{suffix}"
        problem = compile_extension(root / SOURCE, target)
        if problem is not None:
            print(f"geofence: native extension not built ({problem}); using the pure-Python request path")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"geofence/native/_core{suffix}"


def compile_extension(source: Path, target: Path) -> str | None:
    """Compile *source* into the extension module *target* with ``$CC`` (else the compiler Python was built
    with); None on success, else why not (one line)."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    command = [
        *compiler, "-O2", "-fPIC", "-shared", "-Wall", "-Werror=implicit-function-declaration",
        "-fno-strict-aliasing", f"-I{include}", str(source), "-o", str(target),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{compiler[0]}: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return f"{compiler[0]} failed: {lines[0] if lines else result.returncode}"
    return None
