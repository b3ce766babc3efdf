"""LCM Scheduler: SIGMAS on the LCM distillation grid, and the ``lcm_grid`` scheduler of the stock KSampler."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from lcm_plugin.k_sampler import lcm_sigmas
from lcm_plugin.recipe_sampling import sampling_plan

from .common import CATEGORY, NODE_ID_PREFIX
from .host import lcm_options, recipe_of, training_alphas_cumprod

SCHEDULER_NAME = "lcm_grid"


def grid_sigmas(
    model_sampling, steps: int, *, denoise: float = 1.0, original_inference_steps: int | None = None
):
    """Float32 sigmas (+ final 0) for a ComfyUI model_sampling: the timesteps of the adapter's recipe when the
    LCM-LoRA Loader put one on the model, else the LCM grid of N (given here, by the LCM Model, or 50)."""
    abar = training_alphas_cumprod(model_sampling)
    recipe = recipe_of(model_sampling)
    if recipe is not None and original_inference_steps is None:
        return sampling_plan(recipe, steps, abar, denoise=denoise).sigmas.float()
    grid = lcm_options(None, model_sampling, original_inference_steps=original_inference_steps)
    return lcm_sigmas(
        steps, abar, denoise=denoise, original_inference_steps=grid["original_inference_steps"]
    ).float()


def lcm_grid_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """The KSampler's ``lcm_grid`` scheduler (ComfyUI calls ``handler(model_sampling, steps)``)."""
    try:
        return grid_sigmas(model_sampling, steps)
    except ValueError as err:
        raise ValueError(
            f"lcm_grid: {err} (BasicScheduler asks for int(steps / denoise) steps when denoise < 1; the LCM "
            "Scheduler node's denoise input, like the KSampler's, stays on the grid for any strength)"
        ) from err


class LCMPluginScheduler(io.ComfyNode):
    """SIGMAS for SamplerCustom(Advanced): the trained LCM timesteps for any step count and img2img denoise."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_ID_PREFIX}Scheduler",
            display_name="LCM Scheduler",
            category=CATEGORY,
            description="Sigmas exactly on the LCM distillation grid (999, 759, 499, 259 for 4 steps), from the "
            "model's own noise schedule. img2img denoise keeps every step on the grid.",
            inputs=[
                io.Model.Input(
                    "model", tooltip="The model whose noise schedule (alphas_cumprod) the sigmas use."
                ),
                io.Int.Input(
                    "steps", default=4, min=1, max=1000, tooltip="LCM steps (model evaluations); at most N."
                ),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="img2img strength: 1.0 is text-to-image; lower keeps more of the input latent. "
                    "Every step stays on the LCM grid restricted to t < denoise * 1000.",
                ),
                io.Int.Input(
                    "original_inference_steps",
                    default=0,
                    min=0,
                    max=1000,
                    tooltip="N, the distillation grid size (50 for every public LCM). 0 = auto: the LCM Model "
                    "node's N, else 50.",
                ),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps: int, denoise: float, original_inference_steps: int) -> io.NodeOutput:
        if not 0.0 < denoise <= 1.0:
            raise ValueError(
                f"LCM Scheduler: denoise must be in (0, 1], got {denoise}; 1.0 is text-to-image, 0 would not sample."
            )
        sigmas = grid_sigmas(
            model.get_model_object("model_sampling"),
            steps,
            denoise=denoise,
            original_inference_steps=original_inference_steps or None,
        )
        return io.NodeOutput(sigmas)


NODES = [LCMPluginScheduler]
