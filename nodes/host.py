"""What the nodes read from ComfyUI's objects: the training schedule of a MODEL and the LCM options on it.

ComfyUI keeps a ``sigmas`` table on the model's ``model_sampling`` (1000 entries for SD; 50 under core's
ModelSamplingDiscrete "lcm", whose denoiser also applies the LCM boundary condition already).
"""

from __future__ import annotations

import types

import torch

from lcm_plugin import core
from lcm_plugin.host_options import resolve_lcm_options

from .common import MODEL_OPTIONS_KEY

GRID_ATTRIBUTE = "lcm_plugin_original_inference_steps"  # set by the LCM Model node on its model_sampling
RECIPE_ATTRIBUTE = (
    "lcm_plugin_recipe"  # a few-step adapter's recipe, set by the LCM-LoRA Loader on its model_sampling
)


def _is_core_class(obj, name: str) -> bool:
    """Whether ``obj``'s class derives from ``comfy_extras/nodes_model_advanced.py``'s class ``name``.

    Compared by name and module: ComfyUI imports its extra node files by path, so that module may be loaded
    twice (as ``comfy_extras.nodes_model_advanced`` and under its file path) with two distinct class objects.
    """
    return any(
        c.__name__ == name and c.__module__.replace("/", ".").endswith("nodes_model_advanced")
        for c in type(obj).__mro__
    )


def host_applies_boundary_condition(model_sampling) -> bool:
    """True under core's ModelSamplingDiscrete("lcm"), whose denoiser already returns f(x, t)."""
    return _is_core_class(model_sampling, "LCM")


def training_alphas_cumprod(model_sampling) -> torch.Tensor:
    """The model's full training schedule abar_t (float64, one entry per training timestep).

    Under core's ModelSamplingDiscrete("lcm") only the 50 grid sigmas are kept; the full schedule is rebuilt from
    its settings and checked against those 50 entries.
    """
    sigmas = getattr(model_sampling, "sigmas", None)
    if sigmas is None or not hasattr(model_sampling, "log_sigmas"):
        raise ValueError(
            f"{type(model_sampling).__name__} is not a discrete-timestep model sampling; LCM needs an SD-family "
            "model (SD 1.x, SD 2.x, SDXL, SSD-1B)."
        )
    if _is_core_class(model_sampling, "ModelSamplingDiscreteDistilled"):
        import comfy.model_sampling

        settings = {
            "beta_schedule": "linear",  # ComfyUI's name for SD's scaled-linear betas
            "linear_start": model_sampling.linear_start,
            "linear_end": model_sampling.linear_end,
            "timesteps": model_sampling.num_timesteps,
            "zsnr": model_sampling.zsnr,
        }
        full = comfy.model_sampling.ModelSamplingDiscrete(
            types.SimpleNamespace(sampling_settings=settings)
        ).sigmas
        kept = full[model_sampling.skip_steps - 1 :: model_sampling.skip_steps]
        if len(kept) != len(sigmas) or not torch.allclose(kept, sigmas.cpu(), rtol=1e-5):
            raise ValueError(
                "cannot recover the training schedule under ModelSamplingDiscrete(lcm); remove that node (the "
                "LCM Model node replaces it)."
            )
        sigmas = full
    return core.alphas_cumprod_from_sigmas(sigmas.cpu())


def recipe_of(model_sampling):
    """The recipe the LCM-LoRA Loader put on this model (lcm_plugin.adapters.recipes.Recipe), or None."""
    return getattr(model_sampling, RECIPE_ATTRIBUTE, None)


def lcm_options(model_options: dict | None, model_sampling=None, **given) -> dict:
    """The LCM settings for one run: a node's ``given`` inputs, else the model patch's (LCM Model, or an adapter's
    recipe from the LCM-LoRA Loader), else the defaults of plain LCM (:func:`resolve_lcm_options`)."""
    patched = dict((model_options or {}).get(MODEL_OPTIONS_KEY, {}))
    grid = getattr(model_sampling, GRID_ATTRIBUTE, None)
    if grid is not None:
        patched.setdefault("original_inference_steps", grid)
    return resolve_lcm_options(patched, **given)
