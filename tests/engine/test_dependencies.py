"""Every third-party module the package imports is a declared dependency of it (pyproject.toml), and the engine
(what ComfyUI and A1111/Forge import) needs only the base dependencies, which those hosts already have."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = {"PIL": "pillow"}  # import name -> distribution name, where they differ
# Imported only when the feature is asked for, with an error that says what to install.
OPTIONAL = {"bitsandbytes": "--use-8bit-adam / --nf4-base", "datasets": "--hf-dataset"}
HOST_MODULES = {"gradio", "modules"}  # A1111/Forge's own, imported by lcm_plugin/webui inside the WebUI only
ENGINE = ("lcm_plugin/core", "lcm_plugin/k_sampler.py")


def _names(text: str) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in re.findall(r'"([^"]+)"', text)}


def _declared() -> tuple[set[str], set[str]]:
    """(base, base + every extra) distribution names, read as text (tomllib is not in Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    base = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)
    extras = re.search(r"^\[project\.optional-dependencies\]$(.*?)^\[", text, re.M | re.S)
    assert base is not None and extras is not None, "pyproject.toml lost its dependency lists"
    return _names(base.group(1)), _names(base.group(1)) | _names(extras.group(1))


def _imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party module name -> files importing it (at module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for m in modules:
                top = m.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                    "__future__",
                    "lcm_plugin",
                    "lora_training",
                ):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _files(*roots: str) -> list[Path]:
    return [p for r in roots for p in ([ROOT / r] if r.endswith(".py") else sorted((ROOT / r).rglob("*.py")))]


def test_every_import_of_the_package_is_declared():
    _, declared = _declared()
    for name, files in _imports(_files("lcm_plugin", "lora_training")).items():
        if name in HOST_MODULES:
            assert all(f.startswith("lcm_plugin/webui/") for f in files), (name, files)
            continue
        assert DISTRIBUTION.get(name, name).lower() in declared or name in OPTIONAL, (name, sorted(files))


def test_the_engine_needs_only_the_base_dependencies():
    base, _ = _declared()
    imported = _imports(_files(*ENGINE))
    assert {"torch", "tqdm"} <= set(imported)  # k_sampler's progress bar: tqdm is a base dependency
    for name, files in imported.items():
        assert DISTRIBUTION.get(name, name).lower() in base, (name, sorted(files))
