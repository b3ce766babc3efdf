"""Which recipe samples an adapter file: its metadata, its sha256 (the registry), or its registry file name.

Every host asks here (the CLI's ``generate --lora``, the diffusers helper, the A1111/Forge extension, the ComfyUI
nodes), so one file gets one recipe everywhere:

1. ``lcm_plugin.recipe`` in the safetensors metadata (what our trainer writes; ``lcm_plugin.original_inference_steps``
   or, in older exports, ``lcm_plugin.num_ddim_timesteps`` alone means plain LCM on that grid);
2. the file's sha256 equal to a registry entry's (:func:`lcm_plugin.adapters.registry.every_adapter`);
3. the file's name equal to a registry entry's upstream file name (when only one entry has it) or to the name our
   downloads install (``<entry>.safetensors``) -- said so in the notice, since the bytes were not matched;
4. otherwise plain LCM (recipe ``lcm-lora``) with a one-line notice.

Only the header is parsed (never a pickle); hashes are cached per (path, size, mtime).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lcm_plugin.adapters import recipe_table
from lcm_plugin.adapters.few_step_adapters import RECIPE_OF
from lcm_plugin.adapters.inspection import original_inference_steps_from_metadata
from lcm_plugin.adapters.recipes import METADATA_KEY, Recipe, Source
from lcm_plugin.adapters.registry import KnownAdapter, every_adapter

logger = logging.getLogger(__name__)

_hashes: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Recognition:
    """The recipe of one adapter file and how it was found (``metadata``, ``sha256``, ``file name``, ``unknown``)."""

    path: Path
    recipe: Recipe
    how: str
    entry: KnownAdapter | None = None
    detail: str = ""

    @property
    def known(self) -> bool:
        """False when nothing identified the file and plain LCM is the fallback."""
        return self.how != "unknown"

    def notice(self) -> str:
        """One line for the user: what the file is taken for and which recipe samples it."""
        what = f"registry adapter {self.entry.name}" if self.entry is not None else "an adapter"
        if self.how == "unknown":
            return (
                f"{self.path.name}: not a known few-step adapter ({self.detail}); sampling it as plain LCM "
                f"(recipe {self.recipe.name}). If it is a TCD / Hyper-SD / PCM / SDXL-Lightning / DMD2 file, pick its "
                "recipe explicitly (`lcm-plugin adapters list` shows them)."
            )
        extra = f"; {self.detail}" if self.detail else ""
        return f"{self.path.name}: {what} (by {self.how}{extra}), recipe {self.recipe.name}: {self.recipe.describe()}"


def recipe_of_entry(entry: KnownAdapter) -> Recipe:
    """The recipe of a registry entry (plain LCM for entries the table does not name, e.g. user JSON entries)."""
    return recipe_table.get(RECIPE_OF.get(entry.name, recipe_table.DEFAULT_RECIPE))


def adapter_path(path: str | os.PathLike) -> Path:
    """A LoRA file, or the one a folder stands for (``pytorch_lora_weights.safetensors``, else its single file).

    Raises:
        ValueError: a folder without exactly one ``.safetensors`` file, or a missing path.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "pytorch_lora_weights.safetensors").is_file():
            return p / "pytorch_lora_weights.safetensors"
        files = sorted(p.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(
                f"{p} is a folder with {len(files)} .safetensors files; pass the adapter file itself."
            )
        return files[0]
    if not p.is_file():
        raise ValueError(f"adapter {p} does not exist; pass a .safetensors LoRA file.")
    return p


def file_sha256(path: Path) -> str:
    """sha256 of ``path``, cached while its size and mtime stay the same."""
    from lcm_plugin.adapters.download import sha256_file

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = sha256_file(path)
    return _hashes[key]


def recipe_from_metadata(metadata: dict[str, str]) -> Recipe | None:
    """The recipe an adapter's own metadata declares (ours), or None."""
    if METADATA_KEY in metadata:
        return Recipe.from_metadata(metadata[METADATA_KEY])
    found = original_inference_steps_from_metadata(metadata)
    if found is not None:
        grid, key = found
        base = recipe_table.get(recipe_table.DEFAULT_RECIPE)
        return Recipe(
            name=f"lcm-n{int(grid)}",
            title=f"LCM-LoRA distilled on the N = {int(grid)} grid (lcm-plugin trainer)",
            original_inference_steps=int(grid),
            step_range=(1, min(8, int(grid))),
            default_steps=min(4, int(grid)),
            cfg_range=base.cfg_range,
            sources=(Source("adapter metadata", f"{key} = {grid} (lcm-plugin trainer)"),),
        )
    return None


def recognise(path: str | os.PathLike, *, hash_file: bool = True) -> Recognition:
    """The recipe of the adapter at ``path`` (see the module docstring for the order).

    Args:
        path: a ``.safetensors`` adapter (or a folder holding one).
        hash_file: compare the sha256 with the registry (reads the whole file once; cached).

    Raises:
        ValueError: the path is missing or not a safetensors file (the message says which).
    """
    from lcm_plugin.adapters.safetensors_io import read_header

    p = adapter_path(path)
    metadata = read_header(p).metadata
    recipe = recipe_from_metadata(metadata)
    if recipe is not None:
        return Recognition(p, recipe, "metadata")
    entries = every_adapter()
    digest = file_sha256(p) if hash_file else None
    if digest is not None:
        for entry in entries:
            if entry.sha256 is not None and entry.sha256.lower() == digest:
                return Recognition(p, recipe_of_entry(entry), "sha256", entry)
    by_name = [e for e in entries if p.name == f"{e.name}.safetensors"]
    if not by_name:
        upstream = [e for e in entries if Path(e.filename).name == p.name]
        by_name = upstream if len(upstream) == 1 else []
    if by_name:
        entry = by_name[0]
        detail = (
            "the registry has no sha256 for it"
            if entry.sha256 is None
            else "its sha256 differs from the registry's: another revision or a modified copy?"
        )
        return Recognition(p, recipe_of_entry(entry), "file name", entry, detail)
    detail = f"sha256 {digest[:12]}..." if digest else "not hashed"
    recognition = Recognition(p, recipe_table.get(recipe_table.DEFAULT_RECIPE), "unknown", detail=detail + ", no "
                              f"{METADATA_KEY} metadata")  # fmt: skip
    return recognition
