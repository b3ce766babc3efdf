"""Exact LCM in a real ComfyUI on an SDXL-family checkpoint (ComfyUI detects it as Segmind Vega, an SDXL model).

The random checkpoint of tests/comfyui/checkpoints.py "sdxl": Vega's transformer depths, 2048 context, 2816 ADM
inputs, 320 channels at every level (small enough for CI). Conditioning carries a pooled output; ComfyUI's SDXL
ADM then uses the image size (latent size * 8, here 64 x 64) with no crop, which the diffusers side passes as
``time_ids``. Units:
diffusers latents (ComfyUI's LATENT times SDXL's scaling factor 0.13025).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.comfyui.comfy_process import capture_latent, run_workflows, tensor_conditioning, tensor_latent
from tests.comfyui_nodes.reference import lcm_reference

TOLERANCE = 1e-4
SDXL_SCALING_FACTOR = 0.13025
GRID = list(itertools.product((1, 4), (1.0, 0.5), (1.0, 2.0), (1.0, 0.3)))
SHAPE = (1, 4, 8, 8)
TIME_IDS = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])  # ComfyUI: the latent size * 8, no crop


def _prompt(
    ckpt_name: str, path: str, steps: int, denoise: float, cfg: float, gamma: float, seed: int
) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "21": tensor_conditioning("cond", "pooled"),
        "22": tensor_conditioning("uncond", "pooled_uncond"),
        "23": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        if denoise == 1.0
        else tensor_latent("x0"),
    }
    if path == "custom":
        prompt["31"] = {"class_type": "LCMPluginSampler", "inputs": {"gamma": gamma}}
        prompt["32"] = {
            "class_type": "LCMPluginScheduler",
            "inputs": {"model": ["4", 0], "steps": steps, "denoise": denoise, "original_inference_steps": 0},
        }
        prompt["3"] = {
            "class_type": "SamplerCustom",
            "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": seed, "cfg": cfg, "positive": ["21", 0],
                       "negative": ["22", 0], "sampler": ["31", 0], "sigmas": ["32", 0], "latent_image": ["23", 0]},
        }  # fmt: skip
    else:
        prompt["20"] = {
            "class_type": "LCMPluginModel",
            "inputs": {"model": ["4", 0], "prediction_type": "auto", "original_inference_steps": 50, "gamma": gamma,
                       "guidance_embedding_file": "(none: LCM-LoRA or plain model)", "guidance_scale": 8.0},
        }  # fmt: skip
        prompt["3"] = {
            "class_type": "KSampler",
            "inputs": {"model": ["20", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "lcm_exact",
                       "scheduler": "lcm_grid", "positive": ["21", 0], "negative": ["22", 0],
                       "latent_image": ["23", 0], "denoise": denoise},
        }  # fmt: skip
    prompt["99"] = capture_latent(["3", 0], "final")
    return prompt


@pytest.fixture(scope="module")
def runs(tiny_checkpoint):
    ckpt = tiny_checkpoint("sdxl")
    unet = ckpt.diffusers_unet()
    generator = torch.Generator().manual_seed(4)
    cond, uncond = (
        torch.randn(1, 77, 2048, generator=generator),
        torch.randn(1, 77, 2048, generator=generator),
    )
    pooled, pooled_uncond = (
        torch.randn(1, 1280, generator=generator),
        torch.randn(1, 1280, generator=generator),
    )
    x0 = torch.randn(SHAPE, generator=generator)
    cases = [(c, path, 700 + i) for i, c in enumerate(GRID) for path in ("ksampler", "custom")]
    prompts = [_prompt(ckpt.name, path, *c, seed) for c, path, seed in cases]
    tensors = {"cond": cond, "uncond": uncond, "pooled": pooled, "pooled_uncond": pooled_uncond,
               "x0": x0 / SDXL_SCALING_FACTOR}  # fmt: skip
    results = run_workflows(prompts, models={"checkpoints": [ckpt.path]}, tensors=tensors, timeout=1200)
    out = {}
    for (case, path, seed), result in zip(cases, results, strict=True):
        assert result.success, (case, path, result.error, result.validation_error, result.node_errors)
        steps, denoise, cfg, gamma = case
        reference = lcm_reference(
            unet, prediction_type="epsilon", steps=steps, denoise=denoise, cfg=cfg, gamma=gamma, seed=seed,
            cond=cond, uncond=uncond, shape=SHAPE, init_latent=None if denoise == 1.0 else x0,
            added_cond={"text_embeds": pooled, "time_ids": TIME_IDS},
            added_uncond={"text_embeds": pooled_uncond, "time_ids": TIME_IDS},
        )  # fmt: skip
        out[(case, path)] = (result.latents["final"] * SDXL_SCALING_FACTOR, reference)
    return out


@pytest.mark.parametrize("case", GRID, ids=[f"{s}steps-denoise{d}-cfg{c}-gamma{g}" for s, d, c, g in GRID])
@pytest.mark.parametrize("path", ["ksampler", "custom"])
def test_sdxl_family_comfyui_equals_diffusers_scheduler(runs, case, path):
    ours, reference = runs[(case, path)]
    assert ours.shape == reference.shape and torch.isfinite(ours).all()
    assert (ours - reference).abs().max().item() <= TOLERANCE
