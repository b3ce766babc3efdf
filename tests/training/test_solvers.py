"""Teacher solver steps against diffusers' DDIMScheduler and an independent sigma-space DPM-Solver++(2M)."""

from __future__ import annotations

import pytest
import torch

from lcm_plugin.core import make_betas, sd_alphas_cumprod
from lcm_plugin.core.solvers import check_solver, ddim_step, dpmpp_2m_step, euler_step

AC = sd_alphas_cumprod()


def test_ddim_step_equals_diffusers_ddim_scheduler():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, timestep_spacing="trailing")
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for t in (999, 519, 39):
        ref = sched.step(eps, t, x, eta=0.0).prev_sample
        a = AC[t]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        ours = ddim_step(x0, eps, AC[t - 20].reshape(1, 1, 1, 1))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _kdiff_dpmpp_2m(x_ve, denoised_fn, sigmas):
    """k-diffusion's sample_dpmpp_2m (Karras et al. sigma space), written out independently for the test."""
    old = None
    for i in range(len(sigmas) - 1):
        d = denoised_fn(x_ve, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old is None:
            x_ve = (sigmas[i + 1] / sigmas[i]) * x_ve - (-h).expm1() * d
        else:
            h_last = t - (-sigmas[i - 1].log())
            r = h_last / h
            x_ve = (sigmas[i + 1] / sigmas[i]) * x_ve - (-h).expm1() * ((1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old)
        old = d
    return x_ve


def test_dpmpp_2m_matches_sigma_space_reference():
    ts = torch.tensor([999, 759, 499, 259])
    sig = ((1 - AC[ts].double()) / AC[ts].double()).sqrt()
    x0_true = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)).double()

    def denoised_ve(x_ve, s):  # a model whose x0 depends on the input, so the history matters
        return 0.7 * x0_true + 0.1 * torch.tanh(x_ve / (1 + s))

    x_ve = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2)).double() * sig[0]
    ref = _kdiff_dpmpp_2m(x_ve.clone(), denoised_ve, sig)
    a = AC[ts].double().reshape(-1, 1, 1, 1, 1)
    x = x_ve * a[0].sqrt()  # VP sample
    prev_d, prev_a = None, None
    for i in range(len(ts) - 1):
        d = denoised_ve(x / a[i].sqrt(), sig[i])
        x = dpmpp_2m_step(x, d, a[i], a[i + 1], denoised_prev=prev_d, alpha_prod_prev=prev_a)
        prev_d, prev_a = d, a[i]
    torch.testing.assert_close(x / a[-1].sqrt(), ref, atol=1e-10, rtol=1e-10)


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
    errs = [(euler_step(x, eps, t[:1], torch.tensor([500 - k]), AC) - ddim_step(x0, eps, AC[500 - k])).abs().max()
            for k in (40, 20, 1)]
    assert errs[0] > errs[1] > errs[2]


def test_unknown_solver():
    with pytest.raises(ValueError, match="use one of"):
        check_solver("heun")
