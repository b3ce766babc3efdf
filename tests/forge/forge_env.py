"""Forge's own Python environment for the tests: a venv with Forge's pinned requirements, relaxed where needed.

Forge pins 2024 packages (gradio 4.40, transformers 4.46, diffusers 0.31, numpy 1.26, ...) that conflict with
the project's test environment, so Forge runs in a venv of its own, made once and reused:

    python -m tests.forge.forge_env          (scripts/install.sh --tests runs this when a Forge checkout is present)

Location: ``LCM_PLUGIN_FORGE_VENV``, else ``${XDG_CACHE_HOME:-~/.cache}/lcm-plugin/forge-venv`` -- outside the
clone, so CI's fresh clones on the same machine reuse it (~6 GB; building it takes ~4-6 minutes). A stamp file records
the exact requirement lines; a venv whose stamp differs (or that is half-built) is rebuilt from scratch.

Pins relaxed against Forge dfdcbab6's ``requirements_versions.txt`` (see ``RELAXED``), and why:
- ``torch`` (unpinned there; its launcher would install 2.3.1 + cu121): torch 2.14.1 + torchvision 0.29.1, the pair
  on this machine's disk that the project tests with.
- ``setuptools==69.5.1``: torch 2.14.1 requires setuptools >= 77.0.3; kept below 81 because pytorch_lightning
  1.9.4 imports ``pkg_resources``.
- added ``huggingface-guess==0.1.0``: Forge's launcher git-clones lllyasviel/huggingface_guess at 84826248 into
  ``repositories/``; PyPI's 0.1.0 is the same code (compared file by file, only line endings differ).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
RELAXED = {"setuptools": "setuptools>=77.0.3,<81"}
ADDED = ("huggingface-guess==0.1.0",)


def forge_root() -> Path | None:
    """The Forge checkout: ``LCM_PLUGIN_FORGE_PATH``, else ``<repo>/../shared/forge/stable-diffusion-webui-forge``."""
    path = Path(
        os.environ.get("LCM_PLUGIN_FORGE_PATH") or REPO.parent / "shared/forge/stable-diffusion-webui-forge"
    )
    return path if (path / "requirements_versions.txt").is_file() and (path / "modules").is_dir() else None


def venv_dir() -> Path:
    if os.environ.get("LCM_PLUGIN_FORGE_VENV"):
        return Path(os.environ["LCM_PLUGIN_FORGE_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lcm-plugin" / "forge-venv"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def requirements(root: Path) -> list[str]:
    """Forge's requirement lines with the relaxations above (torch comes from ``TORCH_PINS``)."""
    lines = []
    for raw in (root / "requirements_versions.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split("=", 1)[0].split("<", 1)[0].split(">", 1)[0].strip().lower()
        if name == "torch":
            continue
        lines.append(RELAXED.get(name, line))
    return [*TORCH_PINS, *lines, *ADDED]


def _stamp(reqs: list[str]) -> str:
    return hashlib.sha256("\n".join(reqs).encode()).hexdigest()


def is_ready(root: Path, venv: Path | None = None) -> bool:
    """True when the venv exists and was completed for exactly these requirements."""
    venv = venv or venv_dir()
    stamp = venv / "lcm_plugin_requirements.sha256"
    return (
        venv_python(venv).is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == _stamp(requirements(root))
    )


def ensure_venv(root: Path, venv: Path | None = None) -> Path:
    """Build (or reuse) Forge's venv; returns its python. Takes ~4-6 minutes the first time (pip, from PyPI)."""
    venv = venv or venv_dir()
    if is_ready(root, venv):
        return venv_python(venv)
    reqs = requirements(root)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        req_file, constraints = Path(tmp, "requirements.txt"), Path(tmp, "constraints.txt")
        req_file.write_text("\n".join(reqs) + "\n")
        constraints.write_text("\n".join(TORCH_PINS) + "\n")  # keeps every dependency on the CPU-tested torch
        cmd = [str(venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*cmd, "-c", str(constraints), "-r", str(req_file)], check=True)
    tmp_stamp = venv / "lcm_plugin_requirements.sha256.tmp"
    tmp_stamp.write_text(_stamp(reqs) + "\n")
    os.replace(tmp_stamp, venv / "lcm_plugin_requirements.sha256")
    return venv_python(venv)


def main() -> int:
    root = forge_root()
    if root is None:
        print(
            "forge_env: no Forge checkout (set LCM_PLUGIN_FORGE_PATH); its tests will skip", file=sys.stderr
        )
        return 0
    print(f"forge_env: Forge's venv at {venv_dir()} ({'reused' if is_ready(root) else 'building, ~4-6 min'})")
    print(f"forge_env: ready: {ensure_venv(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
