"""Grid, boundary condition, x0 and guidance embedding against diffusers and the paper's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler

from lcm_plugin import core


@pytest.mark.parametrize("original_steps", [10, 20, 25, 50, 100])
def test_grid_equals_diffusers_for_every_step_count(original_steps):
    ref = LCMScheduler(original_inference_steps=original_steps)
    for steps in range(1, min(original_steps, 50) + 1):
        ref.set_timesteps(steps)
        assert core.lcm_timesteps(steps, original_steps).tolist() == ref.timesteps.tolist(), steps


@pytest.mark.parametrize("strength", [0.99, 0.75, 0.5, 0.3, 0.1])
def test_strength_grid_equals_diffusers(strength):
    ref = LCMScheduler()
    for steps in range(1, int(50 * strength) + 1):
        ref.set_timesteps(steps, strength=strength)
        assert core.lcm_timesteps(steps, strength=strength).tolist() == ref.timesteps.tolist()


def test_reference_grid_values():
    assert core.training_grid().tolist() == list(range(19, 1000, 20))
    assert core.lcm_timesteps(1).tolist() == [999]
    assert core.lcm_timesteps(2).tolist() == [999, 499]
    assert core.lcm_timesteps(4).tolist() == [999, 759, 499, 259]
    assert core.lcm_timesteps(8).tolist() == [999, 879, 759, 639, 499, 379, 259, 139]
    assert core.lcm_timesteps(4, strength=0.5).tolist() == [499, 379, 259, 139]


def test_custom_timesteps_with_strength_match_diffusers():
    ref = LCMScheduler()
    custom = [999, 759, 499, 259]
    for strength in (1.0, 0.75, 0.5):
        ref.set_timesteps(timesteps=custom, strength=strength)
        assert core.validate_custom_timesteps(custom, strength=strength).tolist() == ref.timesteps.tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_inference_steps": 51}, "cannot exceed original_inference_steps"),
        ({"num_inference_steps": 0}, "must be >= 1"),
        ({"num_inference_steps": 4, "strength": 0.0}, r"strength must be in \(0, 1\]"),
        ({"num_inference_steps": 4, "strength": 1.5}, r"strength must be in \(0, 1\]"),
        ({"num_inference_steps": 30, "strength": 0.5}, "leaves only 25 of 50"),
        ({"num_inference_steps": 4, "original_inference_steps": 2000}, "original_inference_steps must be in"),
    ],
)
def test_invalid_grid_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        core.lcm_timesteps(**kwargs)


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ([999, 999, 499], "strictly descending"),
        ([259, 499, 999], "strictly descending"),
        ([1000, 499], r"must lie in \[0, 1000\)"),
        ([499, -1], r"must lie in \[0, 1000\)"),
        ([999.5, 10], "must be integers"),
        ([], "non-empty"),
    ],
)
def test_invalid_custom_timesteps(timesteps, message):
    with pytest.raises(ValueError, match=message):
        core.validate_custom_timesteps(timesteps)


def test_boundary_condition_analytic_values():
    c_skip, c_out = core.boundary_condition_scalings(0.0)
    assert (c_skip, c_out) == (1.0, 0.0)
    # s = 10 t; sigma_data = 0.5
    for t in (1, 19, 999):
        s = 10.0 * t
        c_skip, c_out = core.boundary_condition_scalings(float(t))
        assert c_skip == pytest.approx(0.25 / (s * s + 0.25), rel=1e-12)
        assert c_out == pytest.approx(s / (s * s + 0.25) ** 0.5, rel=1e-12)
        assert c_skip + c_out**2 == pytest.approx(1.0, abs=1e-12)  # sigma_data^2/(s^2+sd^2) + s^2/(s^2+sd^2)
    # On the training grid c_skip <= 7e-6, so f is x0 in practice (reference section 2).
    grid = torch.from_numpy(core.training_grid()).double()
    assert float(core.boundary_condition_scalings(grid)[0].max()) <= 7e-6
    # sigma_data and timestep_scaling are honoured.
    c_skip, _ = core.boundary_condition_scalings(2.0, sigma_data=1.0, timestep_scaling=1.0)
    assert c_skip == pytest.approx(1 / 5)


def test_x0_conversions_recover_the_clean_sample():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    abar = core.sd_alphas_cumprod()[torch.tensor([259, 759])].reshape(2, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0  # Salimans & Ho 2022
    torch.testing.assert_close(
        core.predicted_original_sample(eps, x_t, abar, "epsilon"), x0, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        core.predicted_original_sample(v, x_t, abar, "v_prediction"), x0, atol=1e-5, rtol=0
    )
    assert core.predicted_original_sample(x0, x_t, abar, "sample") is x0
    torch.testing.assert_close(core.predicted_noise(x_t, x0, abar), eps, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="prediction_type 'flow' is not supported"):
        core.predicted_original_sample(eps, x_t, abar, "flow")


def test_dynamic_threshold_matches_diffusers():
    ref = LCMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5)
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(3)) * 3
    torch.testing.assert_close(core.dynamic_threshold(x, 0.9, 2.5), ref._threshold_sample(x))


def test_guidance_scale_embedding_matches_lcm_pipeline():
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([0.0, 3.5, 7.5])
    for dim in (256, 33):
        ours = core.guidance_scale_embedding(w, embedding_dim=dim)
        ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
        torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="embedding_dim must be >= 2"):
        core.guidance_scale_embedding(w, embedding_dim=1)


def test_guided_is_the_lcm_formulation():
    cond, uncond = torch.full((2, 1), 2.0), torch.full((2, 1), 1.0)
    torch.testing.assert_close(core.guided(cond, uncond, 3.0), torch.full((2, 1), 5.0))  # (1+w)c - w u
    per_sample = core.guided(cond, uncond, torch.tensor([0.0, 1.0]))
    assert per_sample.flatten().tolist() == [2.0, 3.0]


def test_sigma_timestep_round_trip():
    abar = core.sd_alphas_cumprod()
    t = torch.tensor([999, 500, 19, 0])
    assert core.sigma_to_timestep(core.timestep_to_sigma(t, abar), abar).tolist() == t.tolist()
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        core.sigma_to_timestep(torch.tensor([0.0]), abar)


def test_beta_schedules_match_diffusers():
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        for zsnr in (False, True):
            ref = LCMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=zsnr)
            ours = core.make_betas(beta_schedule=schedule, rescale_betas_zero_snr=zsnr)
            torch.testing.assert_close(ours, ref.betas.float())
    with pytest.raises(ValueError, match="beta_schedule 'cosine' is not supported"):
        core.make_betas(beta_schedule="cosine")
    assert np.isclose(float(core.make_betas(trained_betas=[0.1, 0.2])[1]), 0.2)


def test_gamma_validation_and_intermediate_timestep():
    assert core.intermediate_timestep(499, 1.0) == -1
    assert core.intermediate_timestep(499, 0.0) == 499
    assert core.intermediate_timestep(499, 0.3) == int(np.floor(0.7 * 499))
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
            core.check_gamma(bad)
