"""Which recipe "LCM Exact" samples a generation with: the "LCM recipe" menu, or the LoRA in the prompt.

Host-free (tested without a WebUI). With "Auto" the LoRAs of the prompt (``<lora:NAME:weight>``, as the WebUI's
extra networks parse them) are looked up in the LoRA folders and recognised like everywhere else
(:func:`lcm_plugin.adapters.recognition.recognise`: metadata, sha256, registry file name); the first known one
gives the recipe. No known LoRA: plain LCM with the accordion's gamma and N, and one notice per unknown LoRA.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from lcm_plugin.adapters import recipe_table
from lcm_plugin.adapters.recipes import Recipe
from lcm_plugin.webui.params import RECIPE_AUTO, RECIPE_OFF, LCMParams

logger = logging.getLogger(__name__)

_LORA_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)(?::[^>]*)?>", re.IGNORECASE)
LORA_SUFFIXES = (".safetensors",)


def lora_names_in_prompt(prompt: str) -> list[str]:
    """Names of the ``<lora:NAME:...>`` tags of a prompt, in order, without duplicates."""
    names: list[str] = []
    for match in _LORA_TAG.finditer(prompt or ""):
        name = match.group(1).strip()
        if name and name not in names:
            names.append(name)
    return names


def find_lora_file(name: str, folders: Iterable[str | os.PathLike]) -> Path | None:
    """The LoRA file a prompt's NAME stands for: ``NAME.safetensors`` anywhere below the folders (the WebUI lists
    sub-folders too), matched by file stem case-insensitively; None when there is none."""
    wanted = Path(name).name.lower()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in LORA_SUFFIXES and path.stem.lower() == wanted and path.is_file():
                return path
    return None


@dataclasses.dataclass(frozen=True)
class ChosenRecipe:
    """The recipe of a generation (None: plain LCM with the accordion's settings), the gamma to use, and notes."""

    recipe: Recipe | None
    gamma: float
    source: str = ""
    notices: tuple[str, ...] = ()


def choose_recipe(
    params: LCMParams,
    prompt: str,
    folders: Sequence[str | os.PathLike],
    lora_files: dict[str, str] | None = None,
) -> ChosenRecipe:
    """The recipe for this generation.

    Args:
        params: the accordion's settings (its ``recipe``: Auto, Off or a name).
        prompt: the positive prompt with its ``<lora:...>`` tags.
        folders: the WebUI's LoRA folders (``--lora-dir``, ``models/Lora``).
        lora_files: name -> file the WebUI's own LoRA list already resolved (Forge's ``networks``), if any.
    """
    if params.recipe == RECIPE_OFF:
        return ChosenRecipe(None, params.gamma)
    if params.recipe != RECIPE_AUTO:
        recipe = recipe_table.get(params.recipe)
        return ChosenRecipe(
            recipe, params.gamma if params.gamma_override else recipe.gamma, "the LCM recipe menu"
        )
    from lcm_plugin.adapters.recognition import recognise

    notices = []
    for name in lora_names_in_prompt(prompt):
        path = (lora_files or {}).get(name) or find_lora_file(name, folders)
        if path is None:
            continue  # the WebUI itself reports LoRAs it cannot find
        try:
            found = recognise(path)
        except ValueError as err:
            notices.append(f"LCM Exact: {name}: {err}")
            continue
        if found.known:
            gamma = params.gamma if params.gamma_override else found.recipe.gamma
            return ChosenRecipe(
                found.recipe, gamma, f"<lora:{name}>", (*notices, "LCM Exact: " + found.notice())
            )
        notices.append("LCM Exact: " + found.notice())
    return ChosenRecipe(None, params.gamma, "", tuple(notices))
