"""The engine's update rules against the diffusers schedulers the few-step adapters' authors use.

Tiny random UNet, hand-written loop (the loop every diffusers pipeline runs), same generator on both sides:

- ``consistency="tcd"`` (eta = gamma) equals ``diffusers.TCDScheduler`` bit for bit, with gamma = 0 it equals
  ``DDIMScheduler`` (trailing, eta 0, SD's ``set_alpha_to_one=False``);
- ``consistency="lcm"``, gamma 0, no boundary condition, ``initial_noise="sigma_max"`` equals
  ``EulerDiscreteScheduler`` (trailing) within float32 rounding of its sigma-space arithmetic;
- ``sample_lcm`` (the k-diffusion contract hosts call) equals the scheduler through k-diffusion's CompVisDenoiser.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, TCDScheduler

from lcm_plugin import core
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.k_sampler import sample_lcm
from tests.engine.helpers import import_k_diffusion, tiny_unet

SD_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)  # SD1.5/SDXL scheduler_config.json (plus set_alpha_to_one=False, steps_offset=1 where the class has them)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def _loop(unet, scheduler, *, steps=None, timesteps=None, eta=None, seed=3):
    """What a diffusers text-to-image pipeline does with ``scheduler`` (CFG off)."""
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=list(timesteps))
    else:
        scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(11))
    x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    extra = {} if eta is None else {"eta": eta}
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=cond).sample
            x = scheduler.step(out, t, x, generator=generator, **extra).prev_sample
    return x


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 1.0])
def test_tcd_update_equals_diffusers_tcd_scheduler(unet, steps, gamma):
    theirs = _loop(unet, TCDScheduler(**SD_CONFIG), steps=steps, eta=gamma)
    ours = _loop(unet, LCMPluginScheduler(**SD_CONFIG, consistency="tcd", gamma=gamma), steps=steps)
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize("gamma", [0.1, 0.3, 0.55, 0.7, 0.9])
def test_tcd_intermediate_timestep_is_diffusers_float32_floor(gamma):
    for t in range(0, 1000):
        expected = int(torch.floor((1 - gamma) * torch.tensor(t)))  # the expression in TCDScheduler.step
        assert core.tcd_intermediate_timestep(t, gamma) == expected, (t, gamma)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_tcd_gamma_0_on_trailing_timesteps_equals_ddim_trailing(unet, steps):
    ddim = DDIMScheduler(
        **SD_CONFIG, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing"
    )
    theirs = _loop(unet, ddim, steps=steps, eta=0.0)  # SD/SDXL pipelines pass eta=0.0
    ours = _loop(
        unet,
        LCMPluginScheduler(**SD_CONFIG, consistency="tcd", gamma=0.0, original_inference_steps=1000),
        timesteps=core.trailing_timesteps(steps),
    )
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_ode_step_without_boundary_condition_equals_euler_trailing(unet, steps):
    euler = EulerDiscreteScheduler(**SD_CONFIG, steps_offset=1, timestep_spacing="trailing")
    theirs = _loop(unet, euler, steps=steps)
    ours = _loop(
        unet,
        LCMPluginScheduler(
            **SD_CONFIG,
            gamma=0.0,
            boundary_condition=False,
            initial_noise="sigma_max",
            original_inference_steps=1000,
        ),
        timesteps=core.trailing_timesteps(steps),
    )
    scale = theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() <= 1e-6 * max(scale, 1.0)  # float32 rounding, VE vs VP space


def test_trailing_timesteps_are_diffusers_trailing_spacing():
    for n in range(1, 51):
        ddim = DDIMScheduler(**SD_CONFIG, timestep_spacing="trailing", steps_offset=1)
        ddim.set_timesteps(n)
        euler = EulerDiscreteScheduler(**SD_CONFIG, timestep_spacing="trailing", steps_offset=1)
        euler.set_timesteps(n)
        ours = core.trailing_timesteps(n).tolist()
        assert ours == ddim.timesteps.tolist() == [int(t) for t in euler.timesteps.tolist()], n
    for n in (1, 2, 4, 5, 8, 10, 20, 25, 50):  # n divides T: trailing spacing is the LCM grid of N = n
        assert core.trailing_timesteps(n).tolist() == core.lcm_timesteps(n, n).tolist()
    assert core.trailing_timesteps(4).tolist() == [999, 749, 499, 249]


def test_strength_tail_is_the_img2img_pipelines_slice():
    ts = core.trailing_timesteps(4)
    assert core.strength_tail(ts, 0.5).tolist() == [499, 249]
    assert core.strength_tail(ts, 1.0).tolist() == ts.tolist()
    with pytest.raises(ValueError, match=r"strength 0.2 keeps none of the 4 timesteps .* at least 0.25"):
        core.strength_tail(ts, 0.2)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        core.strength_tail(ts, 0.0)


def test_engine_options_are_checked():
    with pytest.raises(ValueError, match=r"consistency 'ddpm' is not supported; use 'lcm'"):
        LCMPluginScheduler(consistency="ddpm")
    with pytest.raises(ValueError, match=r"initial_noise 'zeros' is not supported"):
        LCMPluginScheduler(initial_noise="zeros")
    with pytest.raises(ValueError, match=r"consistency 'x' is not supported"):
        sample_lcm(lambda x, s: x, torch.zeros(1, 4, 2, 2), torch.tensor([1.0, 0.0]), consistency="x")


def _k_loop(unet, scheduler, timesteps, *, seed=3, **options):
    """sample_lcm through k-diffusion's CompVisDenoiser, noise continuing the seed's stream like the pipeline."""
    _, external = import_k_diffusion()
    cond = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(11))

    class Wrapped(torch.nn.Module):  # the LDM model surface CompVisDenoiser reads
        def __init__(self):
            super().__init__()
            self.unet = unet
            self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod)

        def apply_model(self, x, t, cond):
            return self.unet(x, t, encoder_hidden_states=cond).sample

    denoiser = external.CompVisDenoiser(Wrapped(), quantize=True)
    alphas = scheduler.alphas_cumprod
    sigmas = core.timestep_to_sigma(torch.as_tensor(timesteps), alphas)
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma  # VP, as the pipeline
    x = start / alphas[int(timesteps[0])].sqrt()  # k-diffusion (VE) units

    def noise_sampler(sigma, sigma_next):
        return torch.randn(1, 4, 8, 8, generator=generator)

    return sample_lcm(
        denoiser, x, sigmas, extra_args={"cond": cond}, disable=True, noise_sampler=noise_sampler,
        alphas_cumprod=alphas, **options,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, config, timesteps",
    [
        ("tcd 0.3", dict(consistency="tcd", gamma=0.3), core.lcm_timesteps(4)),
        ("tcd 1.0", dict(consistency="tcd", gamma=1.0), core.lcm_timesteps(2)),
        (
            "ddim",
            dict(consistency="tcd", gamma=0.0, original_inference_steps=1000),
            core.trailing_timesteps(8),
        ),
        ("lcm n=4", dict(gamma=1.0, original_inference_steps=4), core.lcm_timesteps(4, 4)),
        ("lcm 800", dict(gamma=1.0, original_inference_steps=1000), [800]),
        (
            "euler",
            dict(
                gamma=0.0, boundary_condition=False, initial_noise="sigma_max", original_inference_steps=1000
            ),
            core.trailing_timesteps(4),
        ),
    ],
)
def test_sample_lcm_options_equal_the_scheduler(unet, name, config, timesteps):
    scheduler = LCMPluginScheduler(**SD_CONFIG, **config)
    reference = _loop(unet, scheduler, timesteps=timesteps)
    options = dict(
        gamma=config["gamma"],
        consistency=config.get("consistency", "lcm"),
        apply_boundary_condition=config.get("boundary_condition", True),
        original_inference_steps=config.get("original_inference_steps", 50),
    )
    ours = _k_loop(unet, scheduler, timesteps, **options)
    scale = max(reference.abs().max().item(), 1.0)
    assert (ours - reference).abs().max().item() <= 1e-5 * scale, name
