"""One call that puts an adapter's recipe on a diffusers pipeline: scheduler, timesteps, gamma (eta) and CFG.

::

    from lcm_plugin.recipes_diffusers import apply_recipe

    pipe.load_lora_weights("Hyper-SDXL-4steps-lora.safetensors")
    call = apply_recipe(pipe, "Hyper-SDXL-4steps-lora.safetensors")   # a file (recognised), a recipe or its name
    image = pipe("a fox", **call).images[0]                            # timesteps + guidance_scale

The pipeline's scheduler becomes :class:`~lcm_plugin.diffusers_scheduler.LCMPluginScheduler` configured for the
recipe (gamma is a config key, so the SD/SDXL pipelines' ``eta=0.0`` cannot reset it); the returned keyword
arguments carry the exact timesteps and the CFG scale. img2img pipelines get the timesteps on the recipe's grid
for their ``strength`` and ``strength=1.0`` (they then start at the first of them), so every step lands where the
adapter was distilled. Tested equal to each adapter's published diffusers code (tests/recipes).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os

from lcm_plugin.adapters import recipe_table
from lcm_plugin.adapters.recipes import Recipe

logger = logging.getLogger(__name__)


def resolve_recipe(recipe: Recipe | str | os.PathLike) -> Recipe:
    """A :class:`Recipe`, a recipe name (``adapters list``), or an adapter file to recognise (logs one line)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and recipe in recipe_table.RECIPES:
        return recipe_table.RECIPES[recipe]
    if os.path.exists(recipe):
        from lcm_plugin.adapters.recognition import recognise

        found = recognise(recipe)
        (logger.info if found.known else logger.warning)("%s", found.notice())
        return found.recipe
    return recipe_table.get(str(recipe))  # raises with the list of known recipes


def generate_recipe(lora: str | os.PathLike | None, name: str | None = None) -> tuple[Recipe, str | None]:
    """The recipe ``lcm-plugin generate`` samples with, and the line it prints about it.

    ``name`` (``--recipe``) wins; else the LoRA file is recognised; without a LoRA it is plain LCM, silently.
    """
    if name is not None:
        recipe = recipe_table.get(name)
        return recipe, f"recipe {recipe.name}: {recipe.describe()}"
    if lora is None:
        return recipe_table.get(recipe_table.DEFAULT_RECIPE), None
    from lcm_plugin.adapters.recognition import recognise

    found = recognise(lora)
    return found.recipe, found.notice()


def scheduler_for(pipe_config, recipe: Recipe, *, gamma: float | None = None):
    """An :class:`LCMPluginScheduler` for ``recipe`` from a pipeline's scheduler config (its betas and
    prediction type; the recipe's when it fixes one)."""
    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

    options = recipe.engine_options()
    if gamma is not None:
        options["gamma"] = gamma
    if recipe.prediction_type is not None:
        options["prediction_type"] = recipe.prediction_type
    return LCMPluginScheduler.from_config(pipe_config, **options)


def apply_recipe(
    pipe,
    recipe: Recipe | str | os.PathLike,
    *,
    steps: int | None = None,
    strength: float = 1.0,
    guidance_scale: float | None = None,
    gamma: float | None = None,
) -> dict:
    """Set ``pipe.scheduler`` for ``recipe`` and return the call's keyword arguments.

    Args:
        pipe: any diffusers SD/SDXL pipeline (text-to-image, img2img, inpaint, ControlNet...).
        recipe: a :class:`Recipe`, its name, or an adapter file (recognised by metadata / sha256 / file name).
        steps: model evaluations (None: the recipe's default); a count the adapter was not made for logs a
            warning naming the right ones.
        strength: img2img strength; the timesteps follow the recipe's img2img rule.
        guidance_scale: CFG (None: the recipe's; 1 = none, as the authors' ``guidance_scale=0``).
        gamma: override the recipe's gamma (TCD's eta).

    Returns:
        ``{"timesteps": [...], "guidance_scale": g}`` plus ``strength=1.0`` for pipelines that take a strength.
    """
    recipe = resolve_recipe(recipe)
    steps = recipe.default_steps if steps is None else steps
    guidance = recipe.cfg if guidance_scale is None else guidance_scale
    for warning in (recipe.steps_warning(steps), recipe.cfg_warning(guidance)):
        if warning:
            logger.warning("%s", warning)
    if gamma is not None and gamma != recipe.gamma:
        recipe = dataclasses.replace(recipe, gamma=gamma)
    takes_strength = "strength" in inspect.signature(type(pipe).__call__).parameters
    if strength != 1.0 and not takes_strength:
        raise ValueError(
            f"strength {strength} needs an img2img / inpaint pipeline; {type(pipe).__name__} is text-to-image."
        )
    call = {"timesteps": recipe.timesteps_for(steps, strength), "guidance_scale": guidance}
    if takes_strength:
        call["strength"] = 1.0  # the pipeline then starts at call["timesteps"][0], on the recipe's grid
    if recipe.lora_scale != 1.0:
        call["cross_attention_kwargs"] = {"scale": recipe.lora_scale}
    pipe.scheduler = scheduler_for(pipe.scheduler.config, recipe)
    return call
