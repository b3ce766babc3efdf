"""LCM Sampler: exact multistep LCM (with TCD's gamma) for SamplerCustom, and ``lcm_exact`` for the KSampler."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from lcm_plugin import core
from lcm_plugin.k_sampler import sample_lcm

from .common import CATEGORY, NODE_ID_PREFIX
from .host import host_applies_boundary_condition, lcm_options, training_alphas_cumprod

SAMPLER_NAME = "lcm_exact"


def sample_lcm_exact(
    model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, gamma=None
):
    """ComfyUI sampler function: :func:`lcm_plugin.k_sampler.sample_lcm` on the model's own schedule.

    gamma: this sampler's (LCM Sampler node), else the LCM Model patch's, else 1. The per-step noise follows
    :func:`lcm_plugin.core.seeded_step_noise` for ComfyUI's seed, so a seed gives the same image as diffusers.
    """
    extra_args = {} if extra_args is None else extra_args
    model_sampling = model.inner_model.inner_model.model_sampling
    options = lcm_options(extra_args.get("model_options"), model_sampling, gamma=gamma)
    seed = extra_args.get("seed")
    if noise_sampler is None and seed is not None:
        noise_sampler = core.seeded_step_noise(seed, x.shape, device=x.device, dtype=x.dtype)

    def denoiser(
        x, sigma, **kwargs
    ):  # sample_lcm keeps the seed out of model kwargs; ComfyUI's model takes it
        return model(x, sigma, seed=seed, **kwargs)

    return sample_lcm(
        denoiser,
        x,
        sigmas,
        extra_args=extra_args,
        callback=callback,
        disable=disable,
        noise_sampler=noise_sampler,
        gamma=options["gamma"],
        alphas_cumprod=training_alphas_cumprod(model_sampling).to(x.device),
        original_inference_steps=options["original_inference_steps"],
        apply_boundary_condition=not host_applies_boundary_condition(model_sampling),
    )


class LCMPluginSampler(io.ComfyNode):
    """SAMPLER for SamplerCustom(Advanced): exact LCM, or TCD's strategic stochastic sampling with gamma < 1."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_ID_PREFIX}Sampler",
            display_name="LCM Sampler",
            category=CATEGORY,
            description="Multistep LCM with the boundary condition on the trained timesteps, for epsilon and "
            "v-prediction models. gamma < 1 is TCD's sampler. The seed reproduces the image.",
            inputs=[
                io.Float.Input(
                    "gamma",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Re-noise strength between steps: 1.0 = LCM, 0.3 = TCD's default, 0 = deterministic.",
                ),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, gamma: float) -> io.NodeOutput:
        core.check_gamma(gamma)
        return io.NodeOutput(comfy.samplers.KSAMPLER(sample_lcm_exact, extra_options={"gamma": gamma}))


NODES = [LCMPluginSampler]
