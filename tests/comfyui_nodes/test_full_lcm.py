"""A full LCM (``time_cond_proj_dim``) in a real ComfyUI equals diffusers' ``LatentConsistencyModelPipeline``.

ComfyUI drops the guidance projection when it loads the checkpoint; the LCM Model node reads it from the file and
adds cond_proj(w_embedding) to the time embedding. Checkpoint: tests/comfyui/checkpoints.py "sd15_lcm" (SD1.5
shape, one level, time_cond_proj_dim 256, fp16 on disk). Units: diffusers latents (ComfyUI LATENT * 0.18215).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.comfyui.comfy_process import capture_latent, run_workflows, tensor_conditioning
from tests.comfyui_nodes.reference import SD_SCALING_FACTOR

TOLERANCE = 1e-4
CASES = list(itertools.product((1, 2, 4, 8), (8.0, 3.0), ("ksampler", "custom")))
NO_FILE = "(none: LCM-LoRA or plain model)"


def _prompt(ckpt_name: str, guidance_file: str, steps: int, guidance: float, path: str, seed: int) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "21": tensor_conditioning("cond"),
        "22": tensor_conditioning("uncond"),
        "23": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "20": {
            "class_type": "LCMPluginModel",
            "inputs": {
                "model": ["4", 0],
                "prediction_type": "auto",
                "original_inference_steps": 50,
                "gamma": 1.0,
                "guidance_embedding_file": guidance_file,
                "guidance_scale": guidance,
            },
        },  # fmt: skip
    }
    if path == "ksampler":
        prompt["3"] = {
            "class_type": "KSampler",
            "inputs": {"model": ["20", 0], "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "lcm_exact",
                       "scheduler": "lcm_grid", "positive": ["21", 0], "negative": ["22", 0],
                       "latent_image": ["23", 0], "denoise": 1.0},
        }  # fmt: skip
    else:
        prompt["31"] = {"class_type": "LCMPluginSampler", "inputs": {"gamma": 1.0}}
        prompt["32"] = {
            "class_type": "LCMPluginScheduler",
            "inputs": {"model": ["20", 0], "steps": steps, "denoise": 1.0, "original_inference_steps": 0},
        }
        prompt["3"] = {
            "class_type": "SamplerCustom",
            "inputs": {"model": ["20", 0], "add_noise": True, "noise_seed": seed, "cfg": 1.0, "positive": ["21", 0],
                       "negative": ["22", 0], "sampler": ["31", 0], "sigmas": ["32", 0], "latent_image": ["23", 0]},
        }  # fmt: skip
    prompt["99"] = capture_latent(["3", 0], "final")
    return prompt


def _pipeline(unet):
    from diffusers import AutoencoderTiny, LatentConsistencyModelPipeline, LCMScheduler

    return LatentConsistencyModelPipeline(
        vae=AutoencoderTiny(),  # unused: output_type="latent"
        text_encoder=None,  # unused: prompt_embeds are given
        tokenizer=None,
        unet=unet,
        scheduler=LCMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def runs(tiny_checkpoint):
    lcm, plain = tiny_checkpoint("sd15_lcm"), tiny_checkpoint("sd15")
    generator = torch.Generator().manual_seed(3)
    cond, uncond = torch.randn(1, 77, 768, generator=generator), torch.randn(1, 77, 768, generator=generator)
    guidance_file = f"checkpoints/{lcm.name}"
    prompts = [_prompt(lcm.name, guidance_file, s, g, p, 500 + i) for i, (s, g, p) in enumerate(CASES)]
    extra = {
        "plain_file": _prompt(plain.name, f"checkpoints/{plain.name}", 4, 8.0, "ksampler", 1),
        "escape": _prompt(lcm.name, "../../etc/passwd", 4, 8.0, "ksampler", 1),
        "same_seed_w8": _prompt(lcm.name, guidance_file, 4, 8.0, "ksampler", 9),
        "same_seed_w3": _prompt(lcm.name, guidance_file, 4, 3.0, "ksampler", 9),
    }
    results = run_workflows(
        prompts + list(extra.values()),
        models={"checkpoints": [lcm.path, plain.path]},
        tensors={"cond": cond, "uncond": uncond},
        timeout=900,
    )
    pipe = _pipeline(lcm.diffusers_unet())
    pipe.set_progress_bar_config(disable=True)
    compared = {}
    for i, (case, result) in enumerate(zip(CASES, results, strict=False)):
        assert result.success, (case, result.error, result.validation_error, result.node_errors)
        steps, guidance, _ = case
        reference = pipe(
            prompt_embeds=cond,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(500 + i),
            output_type="latent",
            height=64,
            width=64,
        ).images
        compared[case] = (result.latents["final"] * SD_SCALING_FACTOR, reference)
    return compared, dict(zip(extra, results[len(CASES) :], strict=True))


@pytest.mark.parametrize(
    ("steps", "guidance", "path"), CASES, ids=[f"{s}steps-w{g}-{p}" for s, g, p in CASES]
)
def test_full_lcm_with_its_guidance_embedding_equals_diffusers_pipeline(runs, steps, guidance, path):
    ours, reference = runs[0][(steps, guidance, path)]
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= TOLERANCE


def test_the_embedding_changes_the_image(runs):
    """The guidance scale really reaches the UNet: at one seed, guidance 8 and 3 give different latents."""
    extra = runs[1]
    a, b = extra["same_seed_w8"], extra["same_seed_w3"]
    assert a.success and b.success
    assert (a.latents["final"] - b.latents["final"]).abs().max().item() > 1e-3


def test_a_file_without_projection_or_outside_the_folders_is_refused(runs):
    extra = runs[1]
    assert not extra["plain_file"].success
    assert "has no guidance-scale projection" in extra["plain_file"].error["exception_message"]
    assert not extra["escape"].success
    message = (extra["escape"].error or {}).get("exception_message", "") or str(
        extra["escape"].validation_error
    )
    assert "not in" in message or "Value not in list" in message
