"""The discrete DDPM noise schedule and its exact sigma (k-diffusion) view.

Timestep-space code speaks diffusers (``alphas_cumprod[t]``); sigma-space code speaks k-diffusion
(``sigma_t = sqrt((1 - abar_t) / abar_t)``). The conversions here are exact table look-ups, so a
sigma-space host that is handed our sigmas lands on exactly the timesteps LCM was distilled on.
"""

from __future__ import annotations

import math

import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine alpha-bar schedule (Nichol & Dhariwal 2021, eq. 17), float32."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so the last timestep has zero SNR (Lin et al. 2023, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed", Algorithm 1)."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def make_betas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
    trained_betas: list[float] | None = None,
    rescale_betas_zero_snr: bool = False,
) -> torch.Tensor:
    """Betas (float32, length ``num_train_timesteps``) for the named schedule; SD uses ``scaled_linear``."""
    if trained_betas is not None:
        betas = torch.as_tensor(trained_betas, dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = cosine_betas(num_train_timesteps)
    else:
        raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use one of {BETA_SCHEDULES}.")
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s)."""
    return torch.cumprod(1.0 - betas, dim=0)


def sd_alphas_cumprod() -> torch.Tensor:
    """alphas_cumprod of Stable Diffusion 1.x/2.x/XL (1000 steps, scaled_linear 0.00085..0.012), float32."""
    return alphas_cumprod_from_betas(make_betas())


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t), computed in the table's own dtype as k-diffusion and ComfyUI do."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """abar_t = 1 / (1 + sigma_t^2), computed in ``dtype``: the inverse of :func:`sigmas_from_alphas_cumprod`.

    For a host's whole sigma table (float64, the default) or one sampler sigma (in the latents' dtype).
    """
    return 1.0 / (1.0 + sigmas.to(dtype) ** 2)


def batch_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample ``values`` of shape (B,) viewed as (B, 1, ..., 1), to broadcast against the batch ``like``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def alpha_prod_at(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """abar at per-sample integer ``timesteps``, shaped to broadcast against ``like``, on its device, in its dtype."""
    table = alphas_cumprod.to(like.device)
    return batch_view(table[timesteps.to(like.device).long()], like).to(like.dtype)


def add_noise(
    original_samples: torch.Tensor, noise: torch.Tensor, alpha_prod_t: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) (Ho et al. 2020, eq. 4): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (VP space).

    ``alpha_prod_t`` broadcasts against the samples: a 0-d tensor, or per sample from :func:`alpha_prod_at`.
    With the model's noise estimate as ``noise`` it is also the deterministic DDIM step to t.
    """
    # In-place on a fresh temporary: one allocation fewer (this runs on full latents every sampling step).
    return (original_samples * alpha_prod_t.sqrt()).add_(noise * (1 - alpha_prod_t).sqrt())


def timestep_to_sigma(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Exact sigma of integer timesteps under ``alphas_cumprod``."""
    return sigmas_from_alphas_cumprod(alphas_cumprod)[timesteps.long().to(alphas_cumprod.device)]


def nearest_timesteps(sigma: torch.Tensor, alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer timesteps whose training sigmas are nearest to ``sigma`` (in log space), and those log distances.

    ``sigma`` must be > 0 (sigma 0 is the clean image, which has no timestep). Returns (long, float64) tensors.
    """
    table = sigmas_from_alphas_cumprod(alphas_cumprod.double())
    sigma = torch.as_tensor(sigma, dtype=torch.float64).to(table.device).reshape(-1)
    if (sigma <= 0).any() or not torch.isfinite(sigma).all():
        raise ValueError(
            "sigma must be finite and > 0 to map to a timestep; sigma 0 is the clean image (no timestep)."
        )
    dists = (sigma.log()[:, None] - table.log()[None, :]).abs()
    distance, index = dists.min(dim=1)
    return index, distance


def sigma_to_timestep(
    sigma: torch.Tensor, alphas_cumprod: torch.Tensor, *, rtol: float = 1e-3
) -> torch.Tensor:
    """Integer timestep whose sigma is nearest to ``sigma`` (in log space), as a long tensor.

    Raises ValueError when a sigma is further than ``rtol`` from every training sigma: the LCM boundary
    condition and the skipping-step grid are defined on the discrete training timesteps only.
    """
    index, distance = nearest_timesteps(sigma, alphas_cumprod)
    if (distance > rtol).any():
        raise ValueError(
            f"sigma {torch.as_tensor(sigma).reshape(-1).tolist()} is not a training sigma of this noise schedule; "
            "build the sigmas with lcm_plugin.k_sampler.lcm_sigmas (or pass the model's own alphas_cumprod)."
        )
    return index
