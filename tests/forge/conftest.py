"""Fixtures for the A1111/Forge tests: Forge's venv, a writable copy of Forge, and the extension installed in it.

Forge is found as ``LCM_PLUGIN_FORGE_PATH``, else ``<repo>/../shared/forge/stable-diffusion-webui-forge``; its tests
skip with the reason when it is absent. It is never written into: everything runs in a temporary copy without its
``extensions-builtin`` (ControlNet & co. add ~10 s to every start and need packages Forge's requirements lack;
no test uses them). Forge's venv is made by ``scripts/install.sh --tests`` (``tests/forge/forge_env.py``) or, if
missing, here (~4-6 minutes; ``LCM_PLUGIN_FORGE_BUILD_VENV=0`` skips instead).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.forge import forge_env

REPO = forge_env.REPO
FORGE_ROOT = forge_env.forge_root()
NO_FORGE = "no Forge checkout: set LCM_PLUGIN_FORGE_PATH or lay Forge at ../shared/forge/stable-diffusion-webui-forge"


@pytest.fixture(scope="session")
def forge_root() -> Path:
    if FORGE_ROOT is None:
        pytest.skip(NO_FORGE)
    return FORGE_ROOT


@pytest.fixture(scope="session")
def forge_python(forge_root) -> Path:
    """Forge venv's python (built on first use unless LCM_PLUGIN_FORGE_BUILD_VENV=0)."""
    if not forge_env.is_ready(forge_root):
        if os.environ.get("LCM_PLUGIN_FORGE_BUILD_VENV", "1") == "0":
            pytest.skip(
                f"Forge's venv is not built at {forge_env.venv_dir()}: run `python -m tests.forge.forge_env`"
            )
        print(f"\nbuilding Forge's venv at {forge_env.venv_dir()} (~4-6 min, once)")
    return forge_env.ensure_venv(forge_root)


@pytest.fixture(scope="session")
def forge_copy(forge_root, tmp_path_factory) -> Path:
    """A writable copy of Forge (no extensions-builtin), with a data dir holding our extension as a plain clone."""
    base = tmp_path_factory.mktemp("forge")
    copy = base / "forge"
    shutil.copytree(
        forge_root,
        copy,
        ignore=lambda d, names: [
            n
            for n in names
            if n in {".git", "__pycache__"} or (Path(d) == forge_root and n == "extensions-builtin")
        ],
    )
    (copy / "extensions-builtin").mkdir()
    extension = base / "data" / "extensions" / "lcm-plugin"
    for part in ("scripts", "lcm_plugin"):
        shutil.copytree(REPO / part, extension / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (base / "data" / "models" / "Stable-diffusion").mkdir(parents=True)
    return copy


@pytest.fixture(scope="session")
def forge_data(forge_copy) -> Path:
    return forge_copy.parent / "data"
