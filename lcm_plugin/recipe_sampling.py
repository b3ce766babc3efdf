"""A recipe as a k-diffusion sampling plan: what a sigma-space host (ComfyUI, A1111/Forge) runs for an adapter.

The plan names our sampler (:func:`lcm_plugin.k_sampler.sample_lcm`, registered as ``lcm_exact`` in ComfyUI and as
"LCM Exact" in the WebUI), its keyword options, the sigmas (descending, final 0) from the model's own
``alphas_cumprod``, and how to start text-to-image. Host-free (torch only); the math is in :mod:`lcm_plugin.core`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lcm_plugin import core
from lcm_plugin.adapters.recipes import Recipe

SAMPLER_NAME = "lcm_exact"


@dataclass(frozen=True)
class SamplingPlan:
    """What to run for one generation.

    Args:
        sampler: ``lcm_exact`` (``sample_lcm``).
        options: keyword arguments of ``sample_lcm`` (gamma, consistency, apply_boundary_condition,
            original_inference_steps); ``alphas_cumprod`` and the noise sampler are the host's.
        sigmas: the schedule, descending, ending in 0, in the dtype of the given ``alphas_cumprod``.
        timesteps: the training timesteps the sigmas stand for.
        start_scale: for text-to-image, multiply a start of ``sqrt(1 + sigma_0^2) * noise`` (ComfyUI's and the
            WebUI's "pure noise" start) by this: sigma_0 / sqrt(1 + sigma_0^2) for recipes whose authors start from
            sigma_max * noise (diffusers' Euler schedulers, SDXL-Lightning), else 1.
        cfg: the CFG scale to use (1 = none).
        warnings: one line each (steps or CFG not what the authors use); the host shows them.
    """

    sampler: str
    options: dict
    sigmas: torch.Tensor
    timesteps: list[int]
    start_scale: float = 1.0
    cfg: float = 1.0
    warnings: list[str] = field(default_factory=list)


def sampling_plan(
    recipe: Recipe,
    steps: int | None,
    alphas_cumprod: torch.Tensor,
    *,
    denoise: float = 1.0,
    cfg: float | None = None,
    gamma: float | None = None,
) -> SamplingPlan:
    """The plan for ``recipe`` at ``steps`` (None: the recipe's default) and img2img ``denoise``.

    Args:
        recipe: from :mod:`lcm_plugin.adapters.recipe_table` or :func:`lcm_plugin.adapters.recognition.recognise`.
        steps: model evaluations of a text-to-image run; img2img keeps the recipe's rule
            (:meth:`~lcm_plugin.adapters.recipes.Recipe.timesteps_for`).
        alphas_cumprod: the model's cumulative alphas (ComfyUI: 1 / (1 + sigmas^2) of its model_sampling).
        denoise: img2img strength in (0, 1].
        cfg: the user's CFG scale (None: the recipe's); gamma: override the recipe's gamma (None: keep it).
    """
    steps = recipe.default_steps if steps is None else int(steps)
    warnings = [w for w in (recipe.steps_warning(steps),) if w]
    cfg = recipe.cfg if cfg is None else float(cfg)
    if (w := recipe.cfg_warning(cfg)) is not None:
        warnings.append(w)
    gamma = recipe.gamma if gamma is None else float(gamma)
    core.check_gamma(gamma)
    timesteps = recipe.timesteps_for(steps, denoise)
    sigmas = core.timestep_to_sigma(torch.as_tensor(timesteps), alphas_cumprod)
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    start_scale = 1.0
    if recipe.initial_noise == "sigma_max":
        s0 = float(sigmas[0])
        start_scale = s0 / (1.0 + s0**2) ** 0.5
    options = {
        "gamma": gamma,
        "consistency": recipe.consistency,
        "apply_boundary_condition": recipe.boundary_condition,
        "original_inference_steps": recipe.grid_size(),
    }
    return SamplingPlan(SAMPLER_NAME, options, sigmas, timesteps, start_scale, cfg, warnings)
