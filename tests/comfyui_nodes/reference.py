"""The diffusers side of the ComfyUI exactness tests: our scheduler's loop on the checkpoint's diffusers UNet twin.

Noise follows the project's per-step rule (lcm_plugin.core.step_noise): one ``torch.Generator().manual_seed(seed)``
draws the starting noise first and every re-noise after it, exactly as a diffusers pipeline given that generator.
Latents are in diffusers units (ComfyUI's LATENT times the VAE scaling factor 0.18215).
"""

from __future__ import annotations

import torch

from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

SD_SCALING_FACTOR = 0.18215


@torch.no_grad()
def lcm_reference(
    unet,
    *,
    prediction_type: str,
    steps: int,
    denoise: float,
    cfg: float,
    gamma: float,
    seed: int,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    shape: tuple[int, ...],
    init_latent: torch.Tensor | None = None,
    added_cond: dict | None = None,
    added_uncond: dict | None = None,
    scheduler: LCMPluginScheduler | None = None,
    timesteps: list[int] | None = None,
) -> torch.Tensor:
    """Final latents of ``steps`` LCM steps (img2img from ``init_latent`` in diffusers units when denoise < 1).

    CFG is applied to the model output as the SD pipelines do (``uncond + cfg * (cond - uncond)``; cfg 1 = cond
    only); ``added_cond``/``added_uncond`` are SDXL's ``added_cond_kwargs`` of each branch. A configured
    ``scheduler`` (a recipe's) with explicit ``timesteps`` replaces the plain LCM scheduler, as a pipeline given
    ``timesteps=`` runs it (the starting noise times its ``init_noise_sigma``).
    """
    if scheduler is None:
        scheduler = LCMPluginScheduler(prediction_type=prediction_type, gamma=gamma)
        scheduler.set_timesteps(steps, strength=denoise)
    else:
        scheduler.set_timesteps(timesteps=timesteps)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    if init_latent is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(init_latent, noise, scheduler.timesteps[:1])
    for t in scheduler.timesteps:
        out = unet(latents, t, encoder_hidden_states=cond, added_cond_kwargs=added_cond).sample
        if cfg != 1.0:
            out_u = unet(latents, t, encoder_hidden_states=uncond, added_cond_kwargs=added_uncond).sample
            out = out_u + cfg * (out - out_u)
        latents = scheduler.step(out, t, latents, generator=generator).prev_sample
    return latents
