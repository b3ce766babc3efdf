"""LCM Sampler: exact multistep LCM (with TCD's gamma) for SamplerCustom, and ``lcm_exact`` for the KSampler."""

from __future__ import annotations

import math

import comfy.samplers
from comfy_api.latest import io

from lcm_plugin import core
from lcm_plugin.k_sampler import sample_lcm

from .common import CATEGORY, NODE_ID_PREFIX
from .host import host_applies_boundary_condition, lcm_options, training_alphas_cumprod

SAMPLER_NAME = "lcm_exact"


def sample_lcm_exact(
    model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, gamma=None, **engine
):
    """ComfyUI sampler function: :func:`lcm_plugin.k_sampler.sample_lcm` on the model's own schedule.

    gamma and ``engine`` (consistency, apply_boundary_condition, initial_noise, original_inference_steps): this
    sampler's (LCM Sampler node, or the LCM-LoRA Loader's SAMPLER for a recipe), else the model patch's (LCM Model,
    or the recipe the LCM-LoRA Loader put on the model), else plain LCM. The per-step noise follows
    :func:`lcm_plugin.core.seeded_step_noise` for ComfyUI's seed, so a seed gives the same image as diffusers.
    """
    extra_args = {} if extra_args is None else extra_args
    model_sampling = model.inner_model.inner_model.model_sampling
    options = lcm_options(extra_args.get("model_options"), model_sampling, gamma=gamma, **engine)
    x = x * _text_to_image_start(model, model_sampling, sigmas, options["initial_noise"])
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
        consistency=options["consistency"],
        apply_boundary_condition=options["apply_boundary_condition"]
        and not host_applies_boundary_condition(model_sampling),
    )


def _text_to_image_start(model, model_sampling, sigmas, initial_noise: str) -> float:
    """The factor that turns ComfyUI's text-to-image start into the one diffusers (and the adapter's authors) use.

    ComfyUI starts from ``sqrt(1 + sigma^2) * noise`` (pure noise) only when the first sigma is the schedule's
    largest, else from ``sigma * noise`` (+ the latent); diffusers starts text-to-image from pure noise at whatever
    the first timestep is (Hyper-SD's 1-step UNet: t = 800), or from ``sigma * noise`` for ``sigma_max`` recipes
    (Euler schedulers: SDXL-Lightning). An img2img start (a latent that is not empty) is left as ComfyUI made it.
    """
    sigma = float(sigmas[0])
    pure = _starts_from_pure_noise(model_sampling, sigmas)
    latent = getattr(model, "latent_image", None)  # ComfyUI's KSamplerX0Inpaint keeps the sampled latent
    empty = latent is not None and not bool(latent.any())
    if not (pure or empty):
        return 1.0
    current = (1.0 + sigma**2) ** 0.5 if pure else sigma
    target = sigma if initial_noise == "sigma_max" else (1.0 + sigma**2) ** 0.5
    return target / current


def _starts_from_pure_noise(model_sampling, sigmas) -> bool:
    """ComfyUI's own test (KSAMPLER.max_denoise): text-to-image starts at the schedule's largest sigma."""
    sigma_max, first = float(model_sampling.sigma_max), float(sigmas[0])
    return math.isclose(sigma_max, first, rel_tol=1e-05) or first > sigma_max


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
