"""Teacher solver steps against diffusers' DDIMScheduler and k-diffusion's sample_dpmpp_2m (DPM-Solver++(2M))."""

from __future__ import annotations

import pytest
import torch

from lcm_plugin.core import make_betas, sd_alphas_cumprod
from lcm_plugin.core.solvers import check_solver, ddim_step, dpmpp_2m_step, euler_step
from tests.engine.helpers import import_k_diffusion

AC = sd_alphas_cumprod()


def test_ddim_step_equals_diffusers_ddim_scheduler():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for t in (999, 519, 39):
        ref = sched.step(eps, t, x, eta=0.0).prev_sample
        a = AC[t]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        ours = ddim_step(x0, eps, AC[t - 20].reshape(1, 1, 1, 1))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _denoised_ve(x_ve, sigma):
    """A model whose x0 depends on its input, so the solver's history matters (k-diffusion denoiser contract)."""
    x0_true = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)).double()
    return 0.7 * x0_true + 0.1 * torch.tanh(x_ve / (1 + sigma.reshape(-1, 1, 1, 1)))


def test_dpmpp_2m_step_equals_k_diffusion_sample_dpmpp_2m():
    """Our VP-space DPM-Solver++(2M) steps, chained over 3 steps, equal k-diffusion's own sample_dpmpp_2m."""
    sampling, _ = import_k_diffusion()
    ts = torch.tensor([999, 759, 499, 259])
    sig = ((1 - AC[ts].double()) / AC[ts].double()).sqrt()
    x_ve = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2)).double() * sig[0]
    ref = sampling.sample_dpmpp_2m(_denoised_ve, x_ve.clone(), sig, disable=True)
    a = AC[ts].double().reshape(-1, 1, 1, 1, 1)
    x = x_ve * a[0].sqrt()  # VP sample
    prev_d, prev_a = None, None
    for i in range(len(ts) - 1):
        d = _denoised_ve(x / a[i].sqrt(), sig[i])
        x = dpmpp_2m_step(x, d, a[i], a[i + 1], denoised_prev=prev_d, alpha_prod_prev=prev_a)
        prev_d, prev_a = d, a[i]
    torch.testing.assert_close(x / a[-1].sqrt(), ref, atol=1e-10, rtol=1e-10)


def test_lcd_dpmpp_2m_teacher_step_equals_k_diffusion_sample_dpmpp_2m():
    """The distillation's DPM-Solver++(2M) teacher step t_{n+k} -> (midpoint) -> t_n, guided estimates and all,
    is k-diffusion's sample_dpmpp_2m over the sigmas of [t_{n+k}, t_mid, t_n] with the guided x0 as denoiser."""
    from lora_training.lcd import Draws, Objective, guided_estimates, teacher_solve

    sampling, _ = import_k_diffusion()
    g = torch.Generator().manual_seed(5)
    bsz = 3
    z = torch.randn(bsz, 4, 4, 4, generator=g, dtype=torch.float64)
    cond = {"encoder_hidden_states": torch.randn(bsz, 1, 1, 1, generator=g, dtype=torch.float64)}
    uncond = {"encoder_hidden_states": torch.zeros(bsz, 1, 1, 1, dtype=torch.float64)}
    w = torch.tensor([2.0, 5.0, 11.0], dtype=torch.float64)

    def teacher(sample, t, c):  # an epsilon model that depends on its input, the timestep and the text
        return 0.5 * torch.tanh(sample) + 0.2 * c["encoder_hidden_states"] + 1e-4 * t.reshape(-1, 1, 1, 1)

    obj = Objective(alphas_cumprod=AC.double(), prediction_type="epsilon", solver="dpmpp_2m")
    t_start, t_end = torch.full((bsz,), 519), torch.full((bsz,), 499)
    ours = teacher_solve(obj, teacher, z, Draws(t_start, t_end, torch.zeros_like(z), w), cond, uncond)

    ts = torch.tensor([519, 509, 499])  # t_mid = (t_{n+k} + t_n) // 2
    abar = AC.double()[ts]
    sigmas = ((1 - abar) / abar).sqrt()

    def denoiser(x_ve, sigma):
        i = int(torch.argmin((sigmas - sigma[0]).abs()))
        x0, _ = guided_estimates(obj, teacher, x_ve * abar[i].sqrt(), ts[i].repeat(bsz), cond, uncond, w)
        return x0

    ref = sampling.sample_dpmpp_2m(denoiser, z / abar[0].sqrt(), sigmas, disable=True) * abar[-1].sqrt()
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_first_order_dpmpp_equals_ddim():
    g = torch.Generator().manual_seed(3)
    x, x0 = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    a_t, a_s = AC[799].reshape(1, 1, 1, 1), AC[779].reshape(1, 1, 1, 1)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    torch.testing.assert_close(dpmpp_2m_step(x, x0, a_t, a_s), ddim_step(x0, eps, a_s), atol=1e-5, rtol=1e-5)


def test_euler_step_formula_and_convergence_to_ddim():
    betas = make_betas()
    g = torch.Generator().manual_seed(4)
    x, eps = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    t, s = torch.tensor([500, 500, 500]), torch.tensor([480, 499, 480])
    ours = euler_step(x, eps, t, s, AC)
    # dx/dt = -beta_t/2 (x - eps/sigma_t), integrated backwards from t to s
    b, sigma = betas[500], (1 - AC[500]).sqrt()
    dt = (t - s).float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(ours, x + 0.5 * b * dt * (x - eps / sigma), atol=1e-6, rtol=1e-6)
    # With a model of constant eps, DDIM is exact; the first-order Euler error shrinks with the step size.
    x0 = (x - (1 - AC[500]).sqrt() * eps) / AC[500].sqrt()
    errs = [
        (euler_step(x, eps, t[:1], torch.tensor([500 - k]), AC) - ddim_step(x0, eps, AC[500 - k])).abs().max()
        for k in (40, 20, 1)
    ]
    assert errs[0] > errs[1] > errs[2]


def test_unknown_solver():
    with pytest.raises(ValueError, match="use one of"):
        check_solver("heun")
