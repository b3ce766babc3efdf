"""Where the ComfyUI test bed and the browser are, and why a test must skip when they are not usable.

ComfyUI is found as every host test finds it: ``LCM_PLUGIN_COMFYUI_PATH``, else ``<repo>/../shared/comfyui/ComfyUI``
(CI lays it out there). It is read-only: nothing here or in the other harness modules writes into it (servers and
child processes get a temporary ``--base-directory``, and ``PYTHONDONTWRITEBYTECODE=1`` so no ``__pycache__``
appears inside it). ComfyUI is never imported into the pytest process (its top-level ``utils``, ``nodes``, ``app``,
``server`` modules would shadow others); ``comfy_process`` and ``server`` run it in subprocesses.

Each ``*_problem()`` function returns ``None`` when the thing is usable, else the skip reason (a sentence that says
what to install or set).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFYUI_ENV = "LCM_PLUGIN_COMFYUI_PATH"
CHROMIUM_ENV = "LCM_PLUGIN_CHROMIUM"
DEFAULT_COMFYUI = REPO_ROOT.parent / "shared" / "comfyui" / "ComfyUI"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Python modules the ComfyUI server and its nodes import at start-up (import name, pip name). torchaudio is left out
# on purpose: scripts/install.sh does not install it and only ComfyUI's audio nodes need it.
COMFYUI_MODULES = (
    ("aiohttp", "aiohttp"),
    ("torchvision", "torchvision"),
    ("torchsde", "torchsde"),
    ("einops", "einops"),
    ("transformers", "transformers"),
    ("safetensors", "safetensors"),
    ("yaml", "pyyaml"),
    ("PIL", "Pillow"),
    ("scipy", "scipy"),
    ("psutil", "psutil"),
    ("alembic", "alembic"),
    ("sqlalchemy", "SQLAlchemy"),
    ("av", "av"),
    ("comfyui_frontend_package", "comfyui-frontend-package"),
    ("comfyui_workflow_templates", "comfyui-workflow-templates"),
    ("comfyui_embedded_docs", "comfyui-embedded-docs"),
    ("pydantic", "pydantic"),
    ("pydantic_settings", "pydantic-settings"),
)
INSTALL_HINT = "run `bash scripts/install.sh --tests`"


def comfyui_path() -> Path:
    """The ComfyUI checkout the tests use (it may not exist; see ``comfyui_problem``)."""
    return Path(os.environ.get(COMFYUI_ENV) or DEFAULT_COMFYUI).expanduser().resolve()


def comfyui_problem() -> str | None:
    """None when ComfyUI is present and its requirements import; else why its tests skip."""
    root = comfyui_path()
    if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
        return f"no ComfyUI checkout at {root} (set {COMFYUI_ENV} to one, or lay it out at {DEFAULT_COMFYUI})"
    missing = [pip for mod, pip in COMFYUI_MODULES if importlib.util.find_spec(mod) is None]
    if missing:
        return f"ComfyUI's requirements are not installed ({', '.join(missing)}); {INSTALL_HINT}"
    return None


def chromium_path() -> str | None:
    """Debian's chromium (``LCM_PLUGIN_CHROMIUM``, else /usr/bin/chromium, else ``chromium`` on PATH) or None."""
    configured = os.environ.get(CHROMIUM_ENV)
    for candidate in (configured, DEFAULT_CHROMIUM, shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_problem() -> str | None:
    """None when Playwright's Python client and a chromium executable are there; else why browser tests skip."""
    if importlib.util.find_spec("playwright") is None:
        return f"Playwright's Python client is not installed (pip install playwright; {INSTALL_HINT})"
    if chromium_path() is None:
        return (
            f"no chromium executable (apt-get install -y chromium, or set {CHROMIUM_ENV}); "
            "Playwright's own browser download is not used"
        )
    return None
