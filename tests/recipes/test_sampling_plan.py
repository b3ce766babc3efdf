"""The sigma-space plan of each recipe (what ComfyUI and A1111/Forge run): sampler, options, sigmas, start scale.

Without any host: the plan's ``sample_lcm`` call through k-diffusion's CompVisDenoiser on a tiny UNet, started the
way ComfyUI starts text-to-image (``sqrt(1 + sigma_0^2) * noise``, then the plan's ``start_scale``), equals the
diffusers helper's scheduler loop (<= 1e-5 relative to the latent scale), for every recipe, text-to-image and img2img.
"""

from __future__ import annotations

import pytest
import torch

from lcm_plugin import core
from lcm_plugin.adapters import recipe_table
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.k_sampler import sample_lcm
from lcm_plugin.recipe_sampling import sampling_plan
from lcm_plugin.recipes_diffusers import scheduler_for
from tests.engine.helpers import import_k_diffusion, tiny_unet

ALPHAS = core.sd_alphas_cumprod()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def test_plan_fields():
    plan = sampling_plan(recipe_table.get("lightning-4step"), 4, ALPHAS)
    assert plan.sampler == "lcm_exact" and plan.timesteps == [999, 749, 499, 249]
    assert plan.options == {
        "gamma": 0.0, "consistency": "lcm", "apply_boundary_condition": False, "original_inference_steps": 1000,
    }  # fmt: skip
    torch.testing.assert_close(plan.sigmas[:-1], core.timestep_to_sigma(torch.tensor(plan.timesteps), ALPHAS))
    assert plan.sigmas[-1] == 0 and plan.warnings == []
    s0 = float(plan.sigmas[0])
    assert plan.start_scale == pytest.approx(s0 / (1 + s0**2) ** 0.5)
    tcd = sampling_plan(recipe_table.get("tcd"), None, ALPHAS, denoise=0.5)
    assert (
        tcd.timesteps == [499, 379, 259, 139]
        and tcd.options["consistency"] == "tcd"
        and tcd.start_scale == 1.0
    )
    assert tcd.options["gamma"] == 0.3 and tcd.options["original_inference_steps"] == 50
    assert sampling_plan(recipe_table.get("tcd"), 4, ALPHAS, gamma=0.7).options["gamma"] == 0.7
    bad = sampling_plan(recipe_table.get("dmd2-4step"), 6, ALPHAS, cfg=3.0)
    assert bad.warnings == [
        "recipe dmd2-4step: this adapter was distilled for exactly 4 step(s), not 6; use 4 steps "
        "(expect a poor image otherwise).",
        "recipe dmd2-4step: the authors use CFG 1, not 3 (1 = no guidance).",
    ]
    assert bad.timesteps == core.trailing_timesteps(6).tolist()


def _denoiser(unet, alphas):
    _, external = import_k_diffusion()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet
            self.register_buffer("alphas_cumprod", alphas)

        def apply_model(self, x, t, cond):
            return self.unet(x, t, encoder_hidden_states=cond).sample

    return external.CompVisDenoiser(Wrapped(), quantize=True)


COND = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(11))
X0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(12))


def _scheduler_loop(unet, recipe, steps, strength, seed):
    scheduler = scheduler_for(LCMPluginScheduler().config, recipe)
    scheduler.set_timesteps(timesteps=recipe.timesteps_for(steps, strength))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    x = (
        noise * scheduler.init_noise_sigma
        if strength == 1.0
        else scheduler.add_noise(X0, noise, scheduler.timesteps[:1])
    )
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(x, t, encoder_hidden_states=COND).sample
            x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


def _plan_loop(unet, recipe, steps, strength, seed):
    plan = sampling_plan(recipe, steps, ALPHAS, denoise=strength)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    s0 = plan.sigmas[0]
    if strength == 1.0:
        x = (
            noise * (1 + s0**2).sqrt() * plan.start_scale
        )  # ComfyUI's max_denoise start, then the plan's scale
    else:
        x = X0 + noise * s0  # ComfyUI's img2img start (latent + sigma * noise)
    return sample_lcm(
        _denoiser(unet, ALPHAS), x, plan.sigmas, extra_args={"cond": COND}, disable=True,
        noise_sampler=lambda s, sn: torch.randn(1, 4, 8, 8, generator=generator), alphas_cumprod=ALPHAS,
        **plan.options,
    )  # fmt: skip


@pytest.mark.parametrize("name", list(recipe_table.RECIPES))
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_plan_through_k_diffusion_equals_the_diffusers_helper(unet, name, strength):
    recipe = recipe_table.get(name)
    steps = recipe.default_steps
    if strength < 1 and len(recipe.timesteps_for(steps)) * strength < 1:
        pytest.skip("one fixed timestep: no img2img")
    ours = _plan_loop(unet, recipe, steps, strength, seed=7)
    reference = _scheduler_loop(unet, recipe, steps, strength, seed=7)
    scale = max(1.0, reference.abs().max().item())
    assert (ours - reference).abs().max().item() <= 1e-5 * scale, name
