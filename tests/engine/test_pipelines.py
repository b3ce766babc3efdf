"""LCMPluginScheduler end to end in the stock diffusers pipelines, built from tiny random components."""

from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler

from lcm_plugin import core
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from tests.engine.helpers import TimestepRecorder, tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_unet

GEN_ARGS = dict(height=32, width=32, output_type="pt")


def _seed(n=0):
    return torch.Generator().manual_seed(n)


def _latents(pipe, prompt, guidance_scale):
    return pipe(
        prompt,
        num_inference_steps=4,
        guidance_scale=guidance_scale,
        generator=_seed(),
        height=32,
        width=32,
        output_type="latent",
    ).images


def _hand_loop(pipe, prompt, scheduler, shape, timestep_cond=None):
    """The 4-step LCM loop written out by hand: the independent reference for a pipeline run."""
    embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    scheduler.set_timesteps(4)
    gen = _seed()
    x = torch.randn(shape, generator=gen)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = pipe.unet(x, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond).sample
            x = scheduler.step(out, t, x, generator=gen).prev_sample
    return x


@pytest.fixture
def sd_pipe(tmp_path):
    return tiny_sd_pipeline(tmp_path, LCMPluginScheduler())


def test_txt2img_runs_on_the_lcm_grid(sd_pipe):
    recorder = TimestepRecorder(sd_pipe.unet)
    image = sd_pipe(
        "a red circle", num_inference_steps=4, guidance_scale=1.0, generator=_seed(), **GEN_ARGS
    ).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    assert recorder.timesteps == [999, 759, 499, 259]


def test_lcm_lora_style_guidance_and_negative_prompt(sd_pipe, tmp_path):
    def run(pipe, **kw):
        return pipe("a red circle", num_inference_steps=2, generator=_seed(), **GEN_ARGS, **kw).images

    plain = run(sd_pipe, guidance_scale=1.0)
    # CFG 1 has no unconditional pass, so a negative prompt cannot act (as with every diffusers scheduler).
    assert torch.equal(plain, run(sd_pipe, guidance_scale=1.0, negative_prompt="blue"))
    # CFG 1.5 (the LCM-LoRA range) runs the unconditional branch: the negative prompt acts (measured 0.012 of the
    # [0, 1] range on this tiny model), and the image is the one diffusers' own LCMScheduler gives.
    with_neg = run(sd_pipe, guidance_scale=1.5, negative_prompt="blue square")
    reference = run(
        tiny_sd_pipeline(tmp_path, LCMScheduler()), guidance_scale=1.5, negative_prompt="blue square"
    )
    assert (with_neg - reference).abs().max().item() <= 1e-5
    assert (with_neg - run(sd_pipe, guidance_scale=1.5)).abs().max().item() > 1e-3


def test_pipeline_eta_cannot_reset_gamma(tmp_path):
    """The SD pipeline passes eta=0.0 to schedulers whose step() accepts eta; gamma lives in our config."""
    import inspect

    assert "eta" not in inspect.signature(LCMPluginScheduler.step).parameters
    pipe = tiny_sd_pipeline(tmp_path, LCMPluginScheduler(gamma=0.3))
    latents = pipe(
        "a circle", num_inference_steps=4, guidance_scale=1.0, eta=0.0, generator=_seed(), height=32, width=32,
        output_type="latent",
    ).images  # fmt: skip
    # The result is the hand-written loop with gamma = 0.3, far from the gamma = 0 loop that eta = 0.0 would give
    # if it reset gamma (measured 14 in latent units).
    x = _hand_loop(pipe, "a circle", LCMPluginScheduler(gamma=0.3), latents.shape)
    assert (x - latents).abs().max().item() <= 1e-5
    x_eta = _hand_loop(pipe, "a circle", LCMPluginScheduler(gamma=0.0), latents.shape)
    assert (x_eta - latents).abs().max().item() > 1.0


def test_img2img_pipeline_with_on_grid_helper(tmp_path):
    pipe = tiny_sd_pipeline(tmp_path, LCMPluginScheduler(), cls_name="StableDiffusionImg2ImgPipeline")
    recorder = TimestepRecorder(pipe.unet)
    init = torch.rand(1, 3, 32, 32)
    # Unmodified pipeline semantics: int(4 * 0.5) = 2 of the text-to-image timesteps (diffusers issue 7651).
    pipe(
        "a circle",
        image=init,
        num_inference_steps=4,
        strength=0.5,
        guidance_scale=1.0,
        generator=_seed(),
        output_type="pt",
    )
    assert recorder.timesteps == [499, 259]
    # With the helper: every requested step on the strength-restricted grid.
    recorder.timesteps.clear()
    ts = pipe.scheduler.img2img_timesteps(4, strength=0.5)
    out = pipe(
        "a circle",
        image=init,
        timesteps=ts,
        strength=1.0,
        guidance_scale=1.0,
        generator=_seed(),
        output_type="pt",
    ).images
    assert recorder.timesteps == [499, 379, 259, 139]
    assert torch.isfinite(out).all()


def test_sdxl_pipeline(tmp_path):
    pipe = tiny_sdxl_pipeline(tmp_path, LCMPluginScheduler())
    recorder = TimestepRecorder(pipe.unet)
    image = pipe(
        "a red circle",
        negative_prompt="blue",
        num_inference_steps=4,
        guidance_scale=1.5,
        generator=_seed(),
        **GEN_ARGS,
    ).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    assert recorder.timesteps == [999, 759, 499, 259]  # cond and uncond share one batched call per step


def test_latent_consistency_pipeline_with_w_embedding(tmp_path):
    unet = tiny_unet(time_cond_proj_dim=32)
    pipe = tiny_sd_pipeline(
        tmp_path, LCMPluginScheduler(), unet=unet, cls_name="LatentConsistencyModelPipeline"
    )
    latents = _latents(pipe, "a red circle", 8.0)
    # Independent loop: our w-embedding (w = guidance_scale - 1) fed to time_cond_proj_dim.
    w_emb = core.guidance_scale_embedding(torch.tensor([7.0]), embedding_dim=32)
    x = _hand_loop(pipe, "a red circle", LCMPluginScheduler(), latents.shape, timestep_cond=w_emb)
    assert (x - latents).abs().max().item() <= 1e-5
    # w really reaches the UNet: guidance 3 is the hand loop with the embedding of w = 2 (not of w = 7)
    other = _latents(pipe, "a red circle", 3.0)
    w_emb = core.guidance_scale_embedding(torch.tensor([2.0]), embedding_dim=32)
    x = _hand_loop(pipe, "a red circle", LCMPluginScheduler(), other.shape, timestep_cond=w_emb)
    assert (x - other).abs().max().item() <= 1e-5 and (other - latents).abs().max().item() > 0.1
