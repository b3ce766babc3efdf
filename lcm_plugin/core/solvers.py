"""Teacher ODE solver steps between two discrete timesteps (VP / diffusers space), for LCM distillation.

LCM distillation (Luo et al. 2023, section 4.2 and Table 3/4 ablation) moves the teacher's CFG-augmented
estimate from t_{n+k} to t_n with one step of a numerical PF-ODE solver. Notation: abar = alphas_cumprod[t],
alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) (half log-SNR).

- DDIM (Song et al. 2021, eq. 12 with eta = 0): x_s = alpha_s x0 + sigma_s eps. It is the exact solution of the
  linear part of the ODE and equals both first-order DPM-Solver++ and Euler in the (x / alpha, sigma / alpha) view.
- Euler on the VP probability-flow ODE in discrete time (Song et al. 2021 "Score-Based Generative Modeling",
  eq. 13 with f = -beta/2 x, g^2 = beta): dx/dt = -beta_t / 2 (x - eps / sigma_t), one step of length t - s.
- DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the second-order multistep update from x0 at t and at the
  previous (noisier) timestep.
"""

from __future__ import annotations

import torch

from lcm_plugin.core.noise_schedule import add_noise, batch_view

SOLVERS = ("ddim", "euler", "dpmpp_2m")


def check_solver(solver: str) -> None:
    """Raise a ValueError that lists the supported teacher solvers."""
    if solver not in SOLVERS:
        raise ValueError(
            f"solver {solver!r} is not supported; use one of {SOLVERS} (the LCM reference uses 'ddim')."
        )


def _lambda(alpha_prod: torch.Tensor) -> torch.Tensor:
    """Half log-SNR lambda = log(sqrt(abar) / sqrt(1 - abar))."""
    return 0.5 * (torch.log(alpha_prod) - torch.log1p(-alpha_prod))


def ddim_step(denoised: torch.Tensor, noise: torch.Tensor, alpha_prod_s: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step to timestep s: sqrt(abar_s) * x0 + sqrt(1 - abar_s) * eps (``alpha_prod_s`` broadcasts).

    The forward-noising formula (:func:`lcm_plugin.core.noise_schedule.add_noise`) with the eps estimate as noise.
    """
    return add_noise(denoised, noise, alpha_prod_s)


def euler_step(
    sample: torch.Tensor,
    noise: torch.Tensor,
    timestep: torch.Tensor,
    timestep_s: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """One Euler step of the discrete-time VP PF-ODE dx/dt = -beta_t / 2 (x - eps / sigma_t) from t to s < t.

    ``timestep``/``timestep_s`` are integer tensors of shape (B,); beta_t = 1 - abar_t / abar_{t-1} is the
    per-timestep beta of the training schedule (beta_0 = 1 - abar_0). Returns x_s (first order in t - s).
    """
    t = timestep.long()
    ac = alphas_cumprod.to(sample.device)
    prev = torch.where(t > 0, ac[(t - 1).clamp(min=0)], torch.ones_like(ac[t]))
    beta = batch_view(1 - ac[t] / prev, sample).to(sample.dtype)
    sigma = batch_view((1 - ac[t]).sqrt(), sample).to(sample.dtype)
    dt = batch_view(t - timestep_s.long(), sample).to(sample.dtype)
    return sample + 0.5 * beta * dt * (sample - noise / sigma)


def dpmpp_2m_step(
    sample: torch.Tensor,
    denoised: torch.Tensor,
    alpha_prod_t: torch.Tensor,
    alpha_prod_s: torch.Tensor,
    *,
    denoised_prev: torch.Tensor | None = None,
    alpha_prod_prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) step from t to s with data prediction ``denoised`` at t (Lu et al. 2022, Alg. 2).

    With h = lambda_s - lambda_t: x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D, where D = x0_t for the
    first (first-order, = DDIM) step and D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev with r = h_prev / h when the
    previous step's ``denoised_prev`` at ``alpha_prod_prev`` (a noisier timestep) is given.
    """
    lam_t, lam_s = _lambda(alpha_prod_t), _lambda(alpha_prod_s)
    h = lam_s - lam_t
    d = denoised
    if denoised_prev is not None:
        if alpha_prod_prev is None:
            raise ValueError("dpmpp_2m_step needs alpha_prod_prev together with denoised_prev.")
        r = (lam_t - _lambda(alpha_prod_prev)) / h
        d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * denoised_prev
    ratio = ((1 - alpha_prod_s) / (1 - alpha_prod_t)).sqrt()
    return ratio * sample - alpha_prod_s.sqrt() * torch.expm1(-h) * d
