"""Each recipe through our diffusers helper equals the adapter's published diffusers code (<= 1e-5).

The "authors" side of every case is written out from the model card / repository the recipe cites (their scheduler
class, its arguments, their pipeline call), not derived from our recipe; the "ours" side is
``apply_recipe(pipe, name)`` + ``pipe(prompt, **call)``. Same tiny random pipeline, prompt and generator seed;
latents compared (``output_type="latent"``). The base scheduler is the real SD1.5 / SDXL ``scheduler_config.json``.

Bound: max |ours - theirs| <= 1e-5 * max(1, max |theirs|). Every recipe but SDXL-Lightning's is bit-identical
(0.0); Lightning's reference, ``EulerDiscreteScheduler``, computes in k-diffusion (sigma) space where our engine
computes in diffusers' (alpha) space, so the two differ by float32 rounding (~2 ulp: 1e-5 at the random tiny UNet's
latent magnitude of ~45).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    TCDScheduler,
)

from lcm_plugin.adapters.recipe_table import RECIPES
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.recipes_diffusers import apply_recipe
from tests.engine.helpers import tiny_sd_pipeline, tiny_sdxl_pipeline

SD15_SCHEDULER = dict(  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None, clip_sample=False,
)  # fmt: skip
SDXL_SCHEDULER = dict(  # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="epsilon", sample_max_value=1.0, set_alpha_to_one=False,
    skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False,
)  # fmt: skip
PCM_TCD = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    timestep_spacing="trailing",
)  # fmt: skip


def _authors(name: str, config):
    """(scheduler, pipeline kwargs) exactly as the recipe's source writes them."""
    if name == "lcm-lora":
        return LCMScheduler.from_config(config), dict(num_inference_steps=4, guidance_scale=0)
    if name == "lcm-full":
        return LCMScheduler.from_config(config), dict(num_inference_steps=4, guidance_scale=8.0)
    if name == "tcd":
        return TCDScheduler.from_config(config), dict(num_inference_steps=4, guidance_scale=0, eta=0.3)
    if name == "hyper-1step-unified":
        return TCDScheduler.from_config(config), dict(num_inference_steps=1, guidance_scale=0, eta=1.0)
    if name.startswith("hyper-nstep-"):
        n = int(name.split("-")[2])
        ddim = DDIMScheduler.from_config(config, timestep_spacing="trailing")
        cfg = 5.0 if name.endswith("-cfg") else 0
        return ddim, dict(num_inference_steps=n, guidance_scale=cfg)
    if name == "hyper-sdxl-1step-unet":
        lcm = LCMScheduler.from_config(config, timestep_spacing="trailing")
        return lcm, dict(num_inference_steps=1, guidance_scale=0, timesteps=[800])
    if name.startswith("pcm-smallcfg-") or name.startswith("pcm-normalcfg-"):
        n = int(name.split("-")[2])
        return TCDScheduler(**PCM_TCD), dict(
            num_inference_steps=n, guidance_scale=7.5 if "normal" in name else 0.0
        )
    if name == "pcm-lcmlike":
        return LCMScheduler(), dict(num_inference_steps=4, guidance_scale=0.0)
    if name.startswith("lightning-"):
        n = int(name.split("-")[1][0])
        euler = EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
        return euler, dict(num_inference_steps=n, guidance_scale=0)
    if name == "dmd2-4step":
        return LCMScheduler.from_config(config), dict(
            num_inference_steps=4, guidance_scale=0, timesteps=[999, 749, 499, 249]
        )
    raise AssertionError(f"no authors' code written down for recipe {name}")


def _latents(pipe, seed=5, **kwargs):
    out = pipe(
        "a red square", negative_prompt="blurry", generator=torch.Generator().manual_seed(seed),
        output_type="latent", height=16, width=16, **kwargs,
    )  # fmt: skip
    return out.images


@pytest.fixture(scope="module")
def sd_pipe(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd"), PNDMScheduler.from_config(SD15_SCHEDULER))


@pytest.fixture(scope="module")
def sdxl_pipe(tmp_path_factory):
    return tiny_sdxl_pipeline(
        tmp_path_factory.mktemp("sdxl"), EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    )


def _compare(pipe, base_scheduler, name):
    scheduler, kwargs = _authors(name, base_scheduler.config)
    pipe.scheduler = scheduler
    theirs = _latents(pipe, **kwargs)
    pipe.scheduler = base_scheduler
    call = apply_recipe(pipe, name, steps=kwargs.get("num_inference_steps"))
    assert isinstance(pipe.scheduler, LCMPluginScheduler)
    ours = _latents(pipe, **call)
    pipe.scheduler = base_scheduler
    return (ours - theirs).abs().max().item(), theirs.abs().max().item()


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "lcm-full"])  # lcm-full: below (w-embedding)
def test_sd15_pipeline_helper_equals_the_authors_code(sd_pipe, name):
    diff, scale = _compare(sd_pipe, PNDMScheduler.from_config(SD15_SCHEDULER), name)
    assert diff <= 1e-5 * max(1.0, scale), (name, diff, scale)
    if not name.startswith("lightning-"):
        assert diff == 0.0, (name, diff)


@pytest.mark.parametrize(
    "name", ["lcm-lora", "tcd", "hyper-nstep-4", "hyper-1step-unified", "hyper-sdxl-1step-unet",
             "pcm-smallcfg-4", "lightning-4step", "lightning-8step", "dmd2-4step"],
)  # fmt: skip
def test_sdxl_pipeline_helper_equals_the_authors_code(sdxl_pipe, name):
    diff, scale = _compare(sdxl_pipe, EulerDiscreteScheduler.from_config(SDXL_SCHEDULER), name)
    assert diff <= 1e-5 * max(1.0, scale), (name, diff, scale)
    if not name.startswith("lightning-"):
        assert diff == 0.0, (name, diff)


def test_full_lcm_recipe_equals_the_latent_consistency_pipeline(tmp_path):
    """A full LCM (guidance embedding): LatentConsistencyModelPipeline + LCMScheduler, guidance 8, 4 steps."""
    from tests.engine.helpers import tiny_unet

    base = PNDMScheduler.from_config(SD15_SCHEDULER)
    pipe = tiny_sd_pipeline(tmp_path, base, unet=tiny_unet(time_cond_proj_dim=32),
                            cls_name="LatentConsistencyModelPipeline")  # fmt: skip
    scheduler, kwargs = _authors("lcm-full", base.config)
    pipe.scheduler = scheduler
    theirs = pipe("a red square", generator=torch.Generator().manual_seed(5), output_type="latent", height=16,
                  width=16, **kwargs).images  # fmt: skip
    pipe.scheduler = base
    call = apply_recipe(pipe, "lcm-full")
    ours = pipe("a red square", generator=torch.Generator().manual_seed(5), output_type="latent", height=16,
                width=16, **call).images  # fmt: skip
    assert call["guidance_scale"] == 8.0 and (ours - theirs).abs().max().item() == 0.0


@pytest.mark.parametrize("steps", [2, 8])
def test_tcd_and_unified_hyper_at_other_step_counts(sd_pipe, steps):
    base = PNDMScheduler.from_config(SD15_SCHEDULER)
    for name, eta in (("tcd", 0.3), ("hyper-1step-unified", 1.0)):
        sd_pipe.scheduler = TCDScheduler.from_config(base.config)
        theirs = _latents(sd_pipe, num_inference_steps=steps, guidance_scale=0, eta=eta)
        sd_pipe.scheduler = base
        ours = _latents(sd_pipe, **apply_recipe(sd_pipe, name, steps=steps))
        assert (ours - theirs).abs().max().item() <= 1e-5, name
    sd_pipe.scheduler = base


def test_pipeline_eta_does_not_reset_the_recipes_gamma(sd_pipe):
    base = PNDMScheduler.from_config(SD15_SCHEDULER)
    call = apply_recipe(sd_pipe, "tcd")
    with_eta = _latents(sd_pipe, **call, eta=0.0)  # what the SD pipelines pass by default
    sd_pipe.scheduler = TCDScheduler.from_config(base.config)
    authors = _latents(sd_pipe, num_inference_steps=4, guidance_scale=0, eta=0.3)
    sd_pipe.scheduler = base
    assert (with_eta - authors).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def img2img_pipe(tmp_path_factory):
    return tiny_sd_pipeline(
        tmp_path_factory.mktemp("i2i"),
        PNDMScheduler.from_config(SD15_SCHEDULER),
        cls_name="StableDiffusionImg2ImgPipeline",
    )


INIT = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", ["hyper-nstep-4", "hyper-nstep-8", "lightning-4step", "lightning-8step"])
def test_img2img_fixed_timestep_recipes_equal_the_authors_scheduler_in_the_img2img_pipeline(
    img2img_pipe, name
):
    """Authors' DDIM/Euler scheduler in StableDiffusionImg2ImgPipeline(strength=0.5) == our helper's timesteps."""
    base = PNDMScheduler.from_config(SD15_SCHEDULER)
    scheduler, kwargs = _authors(name, base.config)
    img2img_pipe.scheduler = scheduler
    theirs = _latents(img2img_pipe, image=INIT, strength=0.5, **kwargs)
    img2img_pipe.scheduler = base
    call = apply_recipe(img2img_pipe, name, steps=kwargs["num_inference_steps"], strength=0.5)
    assert call["strength"] == 1.0 and len(call["timesteps"]) == kwargs["num_inference_steps"] // 2
    ours = _latents(img2img_pipe, image=INIT, **call)
    img2img_pipe.scheduler = base
    assert (ours - theirs).abs().max().item() <= 1e-5 * max(1.0, theirs.abs().max().item()), name


@pytest.mark.parametrize("name, cls, eta", [("tcd", TCDScheduler, 0.3), ("lcm-lora", LCMScheduler, None)])
def test_img2img_lcm_grid_recipes_equal_the_authors_class_with_its_own_strength_rule(
    img2img_pipe, name, cls, eta
):
    """LCM/TCD: our img2img timesteps are what LCMScheduler/TCDScheduler.set_timesteps(n, strength=s) choose; the
    authors' class on those timesteps in the same img2img pipeline gives the same latents."""
    base = PNDMScheduler.from_config(SD15_SCHEDULER)
    reference = cls.from_config(base.config)
    reference.set_timesteps(4, strength=0.5)
    timesteps = reference.timesteps.tolist()
    img2img_pipe.scheduler = cls.from_config(base.config)
    extra = {} if eta is None else {"eta": eta}
    theirs = _latents(img2img_pipe, image=INIT, timesteps=timesteps, strength=1.0, guidance_scale=0, **extra)
    img2img_pipe.scheduler = base
    call = apply_recipe(img2img_pipe, name, steps=4, strength=0.5)
    assert call["timesteps"] == timesteps == [499, 379, 259, 139]
    ours = _latents(img2img_pipe, image=INIT, **call)
    img2img_pipe.scheduler = base
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_text_to_image_pipeline_refuses_a_strength(sd_pipe):
    base = sd_pipe.scheduler
    with pytest.raises(
        ValueError, match=r"strength 0.5 needs an img2img / inpaint pipeline; StableDiffusionPipeline"
    ):
        apply_recipe(sd_pipe, "tcd", strength=0.5)
    sd_pipe.scheduler = base
