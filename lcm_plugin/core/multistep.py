"""The multistep consistency sampler update (LCM paper Algorithm 3) and its TCD gamma generalisation
(Zheng et al. 2024, "Trajectory Consistency Distillation", strategic stochastic sampling)."""

from __future__ import annotations

import math

import torch

from lcm_plugin.core.consistency import predicted_noise
from lcm_plugin.core.noise_schedule import add_noise


def check_gamma(gamma: float) -> None:
    """gamma must be in [0, 1]: 1 is LCM (full re-noise), 0 is deterministic (DDIM-like)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1] (1 = LCM, 0 = deterministic), got {gamma}.")


CONSISTENCY_FUNCTIONS = ("lcm", "tcd")


def check_consistency(consistency: str) -> None:
    """``lcm`` (LCMScheduler's update) or ``tcd`` (TCDScheduler's strategic stochastic sampling)."""
    if consistency not in CONSISTENCY_FUNCTIONS:
        raise ValueError(
            f"consistency {consistency!r} is not supported; use 'lcm' (boundary condition, clean result: LCM, "
            "LCM-LoRA, DMD2, SDXL-Lightning with gamma 0) or 'tcd' (TCD, Hyper-SD, PCM)."
        )


def tcd_intermediate_timestep(next_timestep: int, gamma: float) -> int:
    """TCD's s = floor((1 - gamma) * t_next) (Zheng et al. 2024, Algorithm 4), in float32 as diffusers'
    ``TCDScheduler.step`` computes it, so the same gamma lands on the same integer timestep.

    Unlike :func:`intermediate_timestep` there is no "clean" value: gamma = 1 gives s = 0, and the last step
    (t_next = 0) ends at timestep 0, i.e. TCD returns the sample at t = 0, not x0.
    """
    check_gamma(gamma)
    return int(torch.floor(torch.tensor(1.0 - gamma, dtype=torch.float32) * int(next_timestep)))


def intermediate_timestep(next_timestep: int, gamma: float) -> int:
    """The timestep s the TCD update reaches deterministically before re-noising to ``next_timestep``.

    s = floor((1 - gamma) * t_next); -1 stands for the clean image (gamma = 1, plain LCM), so gamma = 1
    reproduces LCM exactly and gamma = 0 gives s = t_next (no fresh noise).
    """
    check_gamma(gamma)
    if gamma == 1.0:
        return -1
    return int(math.floor((1.0 - gamma) * next_timestep))


def renoise(
    denoised: torch.Tensor,
    noise: torch.Tensor | None,
    alpha_prod_next: torch.Tensor,
    *,
    sample: torch.Tensor | None = None,
    alpha_prod_t: torch.Tensor | None = None,
    alpha_prod_s: torch.Tensor | None = None,
    noise_estimate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Move the consistency estimate ``denoised`` (x0) to the next timestep (VP space).

    LCM (``alpha_prod_s`` None): x_next = sqrt(abar_next) x0 + sqrt(1 - abar_next) z.
    TCD: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps_hat (eps_hat from ``sample`` at ``alpha_prod_t``),
    then x_next = sqrt(abar_next / abar_s) x_s + sqrt(1 - abar_next / abar_s) z. ``noise_estimate``: the model's
    own eps (TCD uses it directly) instead of eps_hat.
    """
    if alpha_prod_s is None:
        return add_noise(denoised, noise, alpha_prod_next)
    if noise_estimate is not None:
        eps_hat = noise_estimate
    elif sample is None or alpha_prod_t is None:
        raise ValueError(
            "the TCD update needs the current sample and its alpha_prod_t to estimate the noise."
        )
    else:
        eps_hat = predicted_noise(sample, denoised, alpha_prod_t)
    x_s = add_noise(denoised, eps_hat, alpha_prod_s)  # the DDIM step to s
    ratio = alpha_prod_next / alpha_prod_s
    if noise is None or bool(ratio >= 1):
        return x_s
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise
