"""The k-diffusion-contract sampler equals the diffusers-scheduler loop on the same UNet and noise."""

from __future__ import annotations

import pytest
import torch

from lcm_plugin import core
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.k_sampler import lcm_sigmas, sample_lcm
from tests.engine.helpers import import_k_diffusion, tiny_unet

SHAPE = (2, 4, 8, 8)


class _CompVisWrapper(torch.nn.Module):
    """The CompVis/LDM ``apply_model`` interface k_diffusion.external expects, around a diffusers UNet."""

    def __init__(self, unet, alphas_cumprod):
        super().__init__()
        self.unet = unet
        self.register_buffer("alphas_cumprod", alphas_cumprod)

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


def _diffusers_loop(unet, scheduler, steps, strength, x0, noise, cond, seed):
    scheduler.set_timesteps(steps, strength=strength)
    t0 = scheduler.timesteps[:1]
    latents = noise if strength == 1.0 else scheduler.add_noise(x0, noise, t0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(latents, t, encoder_hidden_states=cond).sample
            latents = scheduler.step(out, t, latents, generator=generator).prev_sample
    return latents


def _k_loop(denoiser, alphas_cumprod, steps, strength, x0, noise, cond, seed, gamma=1.0):
    sigmas = lcm_sigmas(steps, alphas_cumprod, denoise=strength)
    # Text-to-image starts from pure noise in VP space, i.e. noise * sqrt(1 + sigma^2) in VE space
    # (ComfyUI's max_denoise scaling); img2img starts from x0 + sigma * noise.
    x = noise * (1 + sigmas[0] ** 2).sqrt() if strength == 1.0 else x0 + noise * sigmas[0]
    generator = torch.Generator().manual_seed(seed)

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.shape, generator=generator)

    return sample_lcm(
        denoiser,
        x,
        sigmas,
        extra_args={"cond": cond},
        disable=True,
        noise_sampler=noise_sampler,
        gamma=gamma,
        alphas_cumprod=alphas_cumprod,
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_k_diffusion_external_denoisers_match_scheduler(prediction_type, strength, steps):
    _, external = import_k_diffusion()
    unet = tiny_unet()
    scheduler = LCMPluginScheduler(prediction_type=prediction_type)
    wrapper = _CompVisWrapper(unet, scheduler.alphas_cumprod)
    denoiser_cls = external.CompVisDenoiser if prediction_type == "epsilon" else external.CompVisVDenoiser
    denoiser = denoiser_cls(wrapper)
    gen = torch.Generator().manual_seed(1)
    x0, noise, cond = (
        torch.randn(SHAPE, generator=gen),
        torch.randn(SHAPE, generator=gen),
        torch.randn(2, 5, 32, generator=gen),
    )

    reference = _diffusers_loop(unet, scheduler, steps, strength, x0, noise, cond, seed=7)
    ours = _k_loop(denoiser, scheduler.alphas_cumprod, steps, strength, x0, noise, cond, seed=7)
    assert torch.isfinite(ours).all()
    assert (ours - reference).abs().max().item() <= 1e-4


def test_boundary_condition_applied_without_host_scalings():
    """A host denoiser that returns raw x0 (Forge skips c_skip/c_out) still gets f = c_skip x + c_out x0."""
    alphas_cumprod = LCMPluginScheduler().alphas_cumprod
    sigmas = lcm_sigmas(1, alphas_cumprod, denoise=0.02)  # one step at t = 19, where c_skip is largest
    x = torch.ones(1, 4, 2, 2) * 3.0
    x0 = torch.zeros_like(x)
    out = sample_lcm(lambda x, sigma: x0, x, sigmas, disable=True, alphas_cumprod=alphas_cumprod)
    t = 19
    c_skip = 0.25 / ((t * 10.0) ** 2 + 0.25)
    abar = alphas_cumprod[t]
    expected = c_skip * x * abar.sqrt()  # c_skip * x_vp + c_out * 0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-9)
    assert out.abs().max() > 0  # the boundary term is really there


def test_lcm_sigmas_on_grid_and_exact():
    alphas_cumprod = LCMPluginScheduler().alphas_cumprod
    sigmas = lcm_sigmas(4, alphas_cumprod)
    table = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    assert sigmas[-1] == 0
    assert torch.equal(sigmas[:-1], table[[999, 759, 499, 259]])
    assert torch.equal(lcm_sigmas(4, alphas_cumprod, denoise=0.5)[:-1], table[[499, 379, 259, 139]])


def test_callback_receives_k_diffusion_keys():
    seen = []
    sigmas = lcm_sigmas(2)
    sample_lcm(
        lambda x, s: x * 0,
        torch.zeros(1, 4, 2, 2),
        sigmas,
        callback=seen.append,
        disable=True,
        noise_sampler=lambda s, sn: torch.zeros(1, 4, 2, 2),
    )
    assert [d["i"] for d in seen] == [0, 1]
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}


@pytest.mark.parametrize("where", ["between_training_sigmas", "above_sigma_max", "karras"])
def test_off_grid_sigmas_snap_to_training_timesteps_with_one_warning(where, caplog):
    """One rule for every off-grid schedule: the model is called at the nearest training sigma, one warning."""
    abar = LCMPluginScheduler().alphas_cumprod
    table = ((1 - abar) / abar) ** 0.5
    if where == "between_training_sigmas":
        sigmas, expect_t = torch.stack([(table[500] * table[501]).sqrt() * 1.0001, torch.tensor(0.0)]), [501]
    elif where == "above_sigma_max":
        sigmas, expect_t = torch.stack([table[-1] * 3, torch.tensor(0.0)]), [999]
    else:
        k_sampling, _ = import_k_diffusion()
        sigmas = k_sampling.get_sigmas_karras(4, float(table[0]), float(table[-1]))
        expect_t = core.nearest_timesteps(sigmas[:-1], abar)[0].tolist()
    seen = []

    def model(x, sigma):
        seen.append(float(sigma[0]))
        return x * 0

    with caplog.at_level("WARNING", logger="lcm_plugin.k_sampler"):
        sample_lcm(model, torch.zeros(1, 4, 2, 2), sigmas, disable=True, alphas_cumprod=abar)
    warnings = [r for r in caplog.records if "not on the LCM grid" in r.getMessage()]
    assert len(warnings) == 1
    assert "original_inference_steps=50 (timesteps 19, 39, ..., 999)" in warnings[0].getMessage()
    torch.testing.assert_close(torch.tensor(seen), table[expect_t].float(), rtol=1e-6, atol=0)


def test_on_grid_sigmas_sample_silently(caplog):
    with caplog.at_level("WARNING", logger="lcm_plugin.k_sampler"):
        sample_lcm(lambda x, s: x * 0, torch.zeros(1, 4, 2, 2), lcm_sigmas(4), disable=True)
    assert not caplog.records


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [
        (torch.tensor([0.0, 1.0, 14.6]), "must be descending"),
        (torch.tensor([14.6]), "at least 2 values"),
        (torch.tensor([[14.6, 0.0]]), "1-D schedule"),
        (torch.tensor([14.6, float("nan"), 0.0]), "finite and >= 0"),
        (torch.tensor([14.6, 0.0, 0.0]), "0 only as their last value"),
    ],
)
def test_bad_sigmas_get_a_clear_error(sigmas, message):
    with pytest.raises(ValueError, match=message):
        sample_lcm(lambda x, s: x, torch.zeros(1, 4, 2, 2), sigmas, disable=True)


def test_seeded_step_noise_is_the_diffusers_generator_stream():
    """A seed's per-step noise continues its CPU stream after the starting noise, as a diffusers pipeline's
    generator does, so it never repeats the starting noise."""
    shape = (2, 4, 3, 3)
    generator = torch.Generator().manual_seed(123)
    _starting, first, second = (torch.randn(shape, generator=generator) for _ in range(3))
    sampler = core.seeded_step_noise(123, shape)
    torch.testing.assert_close(sampler(None, None), first, rtol=0, atol=0)
    torch.testing.assert_close(sampler(None, None), second, rtol=0, atol=0)
    half = core.seeded_step_noise(123, shape, dtype=torch.float16)(None, None)
    assert half.dtype == torch.float16 and torch.equal(half, first.half())


def test_seed_in_extra_args_uses_the_step_noise_rule():
    shape = (1, 4, 2, 2)
    drawn = []
    expected = core.seeded_step_noise(5, shape)
    sample_lcm(
        lambda x, s: x * 0,
        torch.zeros(shape),
        lcm_sigmas(3),
        extra_args={"seed": 5},
        disable=True,
        callback=lambda d: drawn.append(d["x"]),
    )
    # with denoised = 0 the re-noised latent (VE space) is sigma_1 * z, z the first per-step noise
    sigmas = lcm_sigmas(3)
    torch.testing.assert_close(drawn[1], expected(None, None) * sigmas[1], rtol=1e-5, atol=1e-6)


def test_gamma_out_of_range_rejected():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        sample_lcm(lambda x, s: x, torch.zeros(1, 4, 2, 2), lcm_sigmas(2), disable=True, gamma=1.5)


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_tcd_gamma_matches_scheduler_in_sigma_space(gamma):
    _, external = import_k_diffusion()
    unet = tiny_unet()
    scheduler = LCMPluginScheduler(gamma=gamma)
    denoiser = external.CompVisDenoiser(_CompVisWrapper(unet, scheduler.alphas_cumprod))
    gen = torch.Generator().manual_seed(2)
    x0, noise, cond = (
        torch.randn(SHAPE, generator=gen),
        torch.randn(SHAPE, generator=gen),
        torch.randn(2, 5, 32, generator=gen),
    )
    reference = _diffusers_loop(unet, scheduler, 4, 1.0, x0, noise, cond, seed=3)
    ours = _k_loop(denoiser, scheduler.alphas_cumprod, 4, 1.0, x0, noise, cond, seed=3, gamma=gamma)
    assert (ours - reference).abs().max().item() <= 1e-4
