"""LCM in sigma space: a k-diffusion-contract sampler and schedule, for ComfyUI, A1111/Forge and k-diffusion.

Contract (k-diffusion ``sampling.py``): ``model(x, sigma, **extra_args)`` returns the denoised estimate in
the variance-exploding space x = x0 + sigma * eps; the sampler walks ``sigmas`` (descending, ending in 0).

``lcm_sigmas`` returns sigmas that sit exactly on the LCM distillation grid, and ``sample_lcm`` applies the
LCM boundary condition itself (converting each sigma back to its training timestep), so a host whose
denoiser skips the c_skip/c_out scalings (Forge does) still samples exact LCM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

from lcm_plugin import core
from lcm_plugin.core.step_noise import NoiseSampler

logger = logging.getLogger(__name__)


def lcm_sigmas(
    num_inference_steps: int,
    alphas_cumprod: torch.Tensor | None = None,
    *,
    denoise: float = 1.0,
    original_inference_steps: int = 50,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """On-grid LCM sigmas plus a final 0 (k-diffusion schedule), descending, in ``alphas_cumprod``'s dtype.

    Args:
        num_inference_steps: number of LCM steps (model evaluations).
        alphas_cumprod: the model's cumulative alphas (length T); default: Stable Diffusion's schedule.
        denoise: img2img strength in (0, 1]; restricts the grid to the first int(N * denoise) timesteps.
        original_inference_steps: N, the distillation grid size (50 for every public LCM / LCM-LoRA).
        device: device of the result.
    """
    if alphas_cumprod is None:
        alphas_cumprod = core.sd_alphas_cumprod()
    timesteps = core.lcm_timesteps(
        num_inference_steps, original_inference_steps, len(alphas_cumprod), denoise
    )
    sigmas = core.timestep_to_sigma(torch.from_numpy(timesteps), alphas_cumprod)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)


def _checked_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Sigmas as a 1-D descending schedule (zeros only at its end), or a ValueError that says what is wrong."""
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(
            f"sigmas must be a 1-D schedule of at least 2 values (start ... 0), got shape {tuple(sigmas.shape)}."
        )
    values = sigmas.double()
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"sigmas must be finite and >= 0, got {values.tolist()}.")
    if (values[1:] > values[:-1]).any():
        raise ValueError(
            f"sigmas must be descending (noisiest first, ending in 0), got {[round(v, 4) for v in values.tolist()]}; "
            "flip them or build them with lcm_sigmas."
        )
    if (values[:-1] == 0).any():
        raise ValueError("sigmas may contain 0 only as their last value (the clean image).")
    return sigmas


def snap_to_training_sigmas(
    sigmas: torch.Tensor, alphas_cumprod: torch.Tensor, original_inference_steps: int = 50
) -> tuple[torch.Tensor, list[int]]:
    """Map each sigma > 0 to its nearest training timestep; return the training sigmas and those timesteps.

    LCM is defined on the discrete training timesteps and distilled on the grid of ``original_inference_steps``.
    Sigmas from another schedule (karras, normal, sgm_uniform, ...) are moved to the nearest training timestep,
    with one warning that names the grid; sigmas from :func:`lcm_sigmas` pass unchanged and silently.
    An adapter's own explicit timesteps (Hyper-SD's [800]) pass silently with ``original_inference_steps=1000``
    (k = 1: every training timestep is on that grid).
    """
    sigmas = _checked_sigmas(sigmas)
    positive = sigmas[sigmas > 0]
    timesteps, distance = core.nearest_timesteps(positive, alphas_cumprod)
    grid = core.training_grid(original_inference_steps, len(alphas_cumprod))
    on_grid = set(grid.tolist())
    off_grid = [int(t) for t in timesteps.tolist() if int(t) not in on_grid]
    if off_grid or bool((distance > 1e-3).any()):
        logger.warning(
            "LCM sampler: these sigmas are not on the LCM grid of original_inference_steps=%d (timesteps %d, %d, ..., %d); "
            "sampling at the nearest training timesteps %s. For exact LCM use the LCM scheduler "
            "(ComfyUI: 'LCM Scheduler' node or the 'lcm_grid' scheduler; A1111/Forge: 'LCM Grid'; code: lcm_sigmas).",
            original_inference_steps,
            int(grid[0]),
            int(grid[1]) if len(grid) > 1 else int(grid[0]),
            int(grid[-1]),
            timesteps.tolist(),
        )
    table = core.timestep_to_sigma(timesteps, alphas_cumprod).to(device=sigmas.device, dtype=sigmas.dtype)
    snapped = sigmas.clone()
    snapped[: len(table)] = table
    return snapped, timesteps.tolist()


def default_noise_sampler(x: torch.Tensor, seed: int | None) -> NoiseSampler:
    """Per-step noise: :func:`lcm_plugin.core.seeded_step_noise` for a seed, else torch's global RNG."""
    if seed is not None:
        return core.seeded_step_noise(seed, x.shape, device=x.device, dtype=x.dtype)
    return lambda sigma, sigma_next: torch.randn(x.shape, device=x.device, dtype=x.dtype)


@torch.no_grad()
def sample_lcm(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    gamma: float = 1.0,
    alphas_cumprod: torch.Tensor | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    original_inference_steps: int = 50,
    apply_boundary_condition: bool = True,
    consistency: str = "lcm",
) -> torch.Tensor:
    """Multistep LCM sampling (LCM paper Algorithm 3) with TCD's gamma, on the k-diffusion contract.

    Args:
        model: denoiser, ``model(x, sigma, **extra_args)`` -> x0 estimate (k-diffusion/ComfyUI/A1111 wrappers).
        x: the starting latent, already noised to ``sigmas[0]`` in VE space (x0 + sigma * noise).
        sigmas: descending sigmas ending in 0, normally from :func:`lcm_sigmas`. Sigmas off the LCM grid are
            moved to the nearest training timestep with one warning (see :func:`snap_to_training_sigmas`).
        extra_args: passed to ``model``; a ``seed`` entry seeds the default noise sampler (ComfyUI style)
            and is not passed on.
        callback: called each step with {'x', 'i', 'sigma', 'sigma_hat', 'denoised'}.
        disable: disable the progress bar.
        noise_sampler: ``noise_sampler(sigma, sigma_next)`` -> fresh noise; default: the per-step noise rule of
            :mod:`lcm_plugin.core.step_noise` for ``extra_args['seed']`` when given, else torch's global RNG.
        gamma: 1 = LCM (default), 0 = deterministic, in between = TCD (0.3 recommended there).
        alphas_cumprod: the model's cumulative alphas, to map sigmas to timesteps; default SD's schedule.
        sigma_data, timestep_scaling: boundary-condition constants (0.5 and 10 for every public LCM).
        original_inference_steps: N, the distillation grid the sigmas are checked against (warning only); 1000
            for an adapter's own explicit timesteps (every training timestep is on that grid).
        apply_boundary_condition: False when the host's denoiser already returns f(x, t) (ComfyUI's
            ModelSamplingDiscrete "lcm"), or for a model that is not a consistency model (SDXL-Lightning's
            Euler recipe: gamma 0 without it is exactly the Euler/DDIM step to x0); never apply it twice.
        consistency: ``"lcm"`` (the LCM update above) or ``"tcd"``: ``diffusers.TCDScheduler``'s update with
            eta = gamma (no boundary condition, s = floor((1 - gamma) * t_next), the last step ends at timestep 0
            and returns that sample in the host's latent units; gamma 0 is DDIM eta 0 to timestep 0).
    """
    core.check_gamma(gamma)
    core.check_consistency(consistency)
    extra_args = {} if extra_args is None else extra_args
    if alphas_cumprod is None:
        alphas_cumprod = core.sd_alphas_cumprod()
    sigmas, timesteps = snap_to_training_sigmas(sigmas, alphas_cumprod, original_inference_steps)
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, extra_args.get("seed"))
    model_args = {k: v for k, v in extra_args.items() if k != "seed"}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **model_args)
        # The boundary condition is defined in the VP space of diffusers: x_vp = sqrt(abar) * x_ve.
        alpha_prod_t = core.alphas_cumprod_from_sigmas(sigma, x.dtype)
        x_vp = x * alpha_prod_t.sqrt()
        if consistency == "tcd":
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
            x = _tcd_step(
                denoised,
                x_vp,
                alpha_prod_t,
                sigma,
                sigma_next,
                timesteps,
                i,
                gamma,
                alphas_cumprod,
                noise_sampler,
            )
            continue
        if apply_boundary_condition:
            denoised = core.consistency_output(
                x_vp, denoised, timesteps[i], sigma_data=sigma_data, timestep_scaling=timestep_scaling
            )
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
            continue
        alpha_prod_next = core.alphas_cumprod_from_sigmas(sigma_next, x.dtype)
        s = core.intermediate_timestep(timesteps[i + 1], gamma)
        alpha_prod_s = None if s < 0 else alphas_cumprod[s].to(device=x.device, dtype=x.dtype)
        noise = noise_sampler(sigma, sigma_next) if gamma > 0 else None
        x_vp = core.renoise(
            denoised,
            noise,
            alpha_prod_next,
            sample=x_vp,
            alpha_prod_t=alpha_prod_t,
            alpha_prod_s=alpha_prod_s,
        )
        x = x_vp / alpha_prod_next.sqrt()
    return x


def _tcd_step(
    denoised, x_vp, alpha_prod_t, sigma, sigma_next, timesteps, i, gamma, alphas_cumprod, noise_sampler
):
    """One TCD update in sigma space; the last one returns the VP sample at timestep 0 (= diffusers' latents)."""
    last = bool(sigma_next == 0)
    next_timestep = 0 if last else timesteps[i + 1]
    s = core.tcd_intermediate_timestep(next_timestep, gamma)
    alpha_prod_s = alphas_cumprod[s].to(device=x_vp.device, dtype=x_vp.dtype)
    if last or gamma == 0:
        noise, alpha_prod_next = None, alpha_prod_s
    else:
        noise = noise_sampler(sigma, sigma_next)
        alpha_prod_next = core.alphas_cumprod_from_sigmas(sigma_next, x_vp.dtype)
    x_next = core.renoise(
        denoised, noise, alpha_prod_next, sample=x_vp, alpha_prod_t=alpha_prod_t, alpha_prod_s=alpha_prod_s
    )
    return x_next if last else x_next / alpha_prod_next.sqrt()
