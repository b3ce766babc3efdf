"""LCMPluginScheduler equals diffusers.LCMScheduler and goes beyond it where documented."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    TCDScheduler,
)

from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

# Scheduler configs as the checkpoints ship them (scheduler/scheduler_config.json).
SD15 = PNDMScheduler.from_config(
    {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    }
).config
SD21_V = DDIMScheduler.from_config(
    {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }
).config
SDXL = EulerDiscreteScheduler.from_config(
    {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": None,
        "use_karras_sigmas": False,
    }
).config
DPMPP = DPMSolverMultistepScheduler(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    algorithm_type="dpmsolver++",
    solver_order=2,
    steps_offset=1,
    timestep_spacing="leading",
    use_karras_sigmas=True,
).config


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic non-linear stand-in for a UNet (the scheduler only sees its output)."""
    return torch.tanh(0.7 * x + 0.001 * float(t)) + 0.1 * x.flip(-1)


def run_loop(scheduler, generator_seed=0, shape=(2, 4, 6, 6), **set_kwargs):
    scheduler.set_timesteps(**set_kwargs)
    gen = torch.Generator().manual_seed(generator_seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(123))
    for t in scheduler.timesteps:
        x = scheduler.step(fake_model(x, t), t, x, generator=gen).prev_sample
    return x


CASES = list(itertools.product(["epsilon", "v_prediction", "sample"], [10, 20, 25, 50, 100]))


@pytest.mark.parametrize(("prediction_type", "original_steps"), CASES)
def test_full_loop_equals_diffusers_lcm(prediction_type, original_steps):
    kwargs = dict(prediction_type=prediction_type, original_inference_steps=original_steps)
    ours, ref = LCMPluginScheduler(**kwargs), LCMScheduler(**kwargs)
    for steps in sorted({1, 2, 3, 4, 8, min(original_steps, 50)}):
        for strength in (1.0, 0.5):
            if steps > int(original_steps * strength):
                continue
            a = run_loop(ours, num_inference_steps=steps, strength=strength)
            b = run_loop(ref, num_inference_steps=steps, strength=strength)
            assert torch.equal(ours.timesteps, ref.timesteps)
            assert (a - b).abs().max().item() <= 1e-6, (steps, strength)


def test_every_step_count_equals_diffusers():
    ours, ref = LCMPluginScheduler(), LCMScheduler()
    for steps in range(1, 51):
        a, b = run_loop(ours, num_inference_steps=steps), run_loop(ref, num_inference_steps=steps)
        assert (a - b).abs().max().item() <= 1e-6, steps


def test_custom_timesteps_equal_diffusers():
    ours, ref = LCMPluginScheduler(), LCMScheduler()
    custom = [999, 879, 499, 259, 19]
    a, b = run_loop(ours, timesteps=custom), run_loop(ref, timesteps=custom)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert (a - b).abs().max().item() <= 1e-6


def test_custom_timesteps_with_strength_end_clean():
    """diffusers keeps num_inference_steps at the unsliced length here, so its last step re-noises the result;
    ours ends on the clean estimate, which equals diffusers' own ``denoised`` output of that last step."""
    ours, ref = LCMPluginScheduler(), LCMScheduler()
    custom = [999, 879, 499, 259, 19]
    a = run_loop(ours, timesteps=custom, strength=0.5)
    ref.set_timesteps(timesteps=custom, strength=0.5)
    assert ours.timesteps.tolist() == ref.timesteps.tolist() == [259, 19]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 4, 6, 6), generator=torch.Generator().manual_seed(123))
    for t in ref.timesteps:
        out = ref.step(fake_model(x, t), t, x, generator=gen)
        x = out.prev_sample
    assert (a - out.denoised).abs().max().item() <= 1e-6
    assert (a - out.prev_sample).abs().max().item() > 1e-3  # diffusers' re-noised result differs


@pytest.mark.parametrize(
    "option",
    [{"clip_sample": True, "prediction_type": "sample"}, {"thresholding": True, "sample_max_value": 2.0}],
)
def test_clipping_and_thresholding_equal_diffusers(option):
    a = run_loop(LCMPluginScheduler(**option), num_inference_steps=4)
    b = run_loop(LCMScheduler(**option), num_inference_steps=4)
    assert (a - b).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "shipped", [SD15, SD21_V, SDXL, DPMPP], ids=["sd15-pndm", "sd21-ddim-v", "sdxl-euler", "dpmpp"]
)
def test_from_shipped_configs(shipped, tmp_path):
    ours = LCMPluginScheduler.from_config(shipped)
    ref = LCMScheduler.from_config(shipped)
    assert ours.config.prediction_type == shipped.get("prediction_type", "epsilon")
    # timestep_spacing / steps_offset never change the LCM grid: they are not our config keys.
    for key in ("timestep_spacing", "steps_offset", "set_alpha_to_one"):
        assert key not in LCMPluginScheduler._get_init_keys(LCMPluginScheduler)
    a, b = run_loop(ours, num_inference_steps=4), run_loop(ref, num_inference_steps=4)
    assert ours.timesteps.tolist() == [999, 759, 499, 259]
    assert (a - b).abs().max().item() <= 1e-6
    # save_pretrained / from_pretrained round trip keeps every setting.
    ours.save_pretrained(tmp_path)
    again = LCMPluginScheduler.from_pretrained(tmp_path)
    own_keys = LCMPluginScheduler._get_init_keys(LCMPluginScheduler) - {"self"}
    assert {k: again.config[k] for k in own_keys} == {k: ours.config[k] for k in own_keys}


def test_gamma_round_trips_and_changes_sampling(tmp_path):
    sched = LCMPluginScheduler(gamma=0.3, original_inference_steps=25)
    sched.save_pretrained(tmp_path)
    again = LCMPluginScheduler.from_pretrained(tmp_path)
    assert again.config.gamma == 0.3 and again.config.original_inference_steps == 25
    # the reloaded scheduler samples as the configured one, on diffusers' grid of N = 25
    configured = LCMPluginScheduler(gamma=0.3, original_inference_steps=25)
    assert torch.equal(run_loop(again, num_inference_steps=4), run_loop(configured, num_inference_steps=4))
    ref = LCMScheduler(original_inference_steps=25)
    ref.set_timesteps(4)
    assert again.timesteps.tolist() == ref.timesteps.tolist()


def test_determinism_under_generator():
    a = run_loop(LCMPluginScheduler(), generator_seed=5, num_inference_steps=4)
    b = run_loop(LCMPluginScheduler(), generator_seed=5, num_inference_steps=4)
    assert torch.equal(a, b)
    # another seed: the noise diffusers' LCMScheduler draws from that generator, step for step
    c = run_loop(LCMPluginScheduler(), generator_seed=6, num_inference_steps=4)
    assert (c - run_loop(LCMScheduler(), generator_seed=6, num_inference_steps=4)).abs().max().item() <= 1e-6


def test_gamma_zero_is_deterministic():
    a = run_loop(LCMPluginScheduler(gamma=0.0), generator_seed=1, num_inference_steps=4)
    b = run_loop(LCMPluginScheduler(gamma=0.0), generator_seed=2, num_inference_steps=4)
    assert torch.equal(a, b)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7])
def test_gamma_matches_tcd_scheduler_on_intermediate_steps(gamma):
    """TCD (diffusers TCDScheduler, eta = gamma) is the independent reference for gamma < 1.

    The only intended differences are the LCM boundary condition (c_skip <= 4e-8 at t >= 259) and the last
    step, where we return the clean estimate and TCD returns x at timestep 0. So compare every re-noised latent.
    """
    ours, ref = (
        LCMPluginScheduler(gamma=gamma, prediction_type="v_prediction"),
        TCDScheduler(prediction_type="v_prediction"),
    )
    ours.set_timesteps(4)
    ref.set_timesteps(timesteps=ours.timesteps.tolist())
    x = y = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for t in ours.timesteps[:-1]:
        x = ours.step(fake_model(x, t), t, x, generator=g1).prev_sample
        y = ref.step(fake_model(y, t), t, y, eta=gamma, generator=g2).prev_sample
        assert (x - y).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prediction_type": "flow"}, "prediction_type 'flow' is not supported"),
        ({"gamma": 1.2}, r"gamma must be in \[0, 1\]"),
        ({"gamma": -0.5}, r"gamma must be in \[0, 1\]"),
        ({"original_inference_steps": 0}, r"original_inference_steps must be in \[1, 1000\]"),
        ({"beta_schedule": "cosine"}, "beta_schedule 'cosine' is not supported"),
    ],
)
def test_invalid_config_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LCMPluginScheduler(**kwargs)


def test_invalid_set_timesteps_and_step():
    sched = LCMPluginScheduler()
    with pytest.raises(ValueError, match="call set_timesteps before step"):
        sched.step(torch.zeros(1), 999, torch.zeros(1))
    with pytest.raises(ValueError, match="exactly one of num_inference_steps or timesteps"):
        sched.set_timesteps(4, timesteps=[999])
    with pytest.raises(ValueError, match="cannot exceed original_inference_steps"):
        sched.set_timesteps(60)
    with pytest.raises(ValueError, match="leaves only 10 of 50"):
        sched.set_timesteps(12, strength=0.2)
    with pytest.raises(ValueError, match="strictly descending"):
        sched.set_timesteps(timesteps=[259, 499])
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="timestep 500 is not in this scheduler's timesteps"):
        sched.step(torch.zeros(1), 500, torch.zeros(1))


def test_img2img_timesteps_helper():
    sched = LCMPluginScheduler()
    assert sched.img2img_timesteps(4, strength=0.5) == [499, 379, 259, 139]
    assert sched.img2img_timesteps(4, strength=0.98) == [979, 739, 499, 259]
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        sched.img2img_timesteps(4, strength=0.0)


def test_dead_diffusers_keys_are_rejected_as_arguments():
    for key, value in (("timestep_spacing", "trailing"), ("steps_offset", 1), ("set_alpha_to_one", False)):
        with pytest.raises(TypeError, match=key):
            LCMPluginScheduler(**{key: value})
