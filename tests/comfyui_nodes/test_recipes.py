"""Every few-step adapter's recipe in a real ComfyUI equals our diffusers path (issue 14; <= 1e-4).

Each adapter is a LoRA file whose metadata names its recipe (``lcm_plugin.recipe``, the first thing recognition
reads); its LoRA weights are zero, so the model is the checkpoint's own and only the recipe is under test (the
LoRA maths is tested in tests/comfyui_lora). The LCM-LoRA Loader's SAMPLER / SIGMAS / cfg in SamplerCustom, and
the stock KSampler with lcm_exact + lcm_grid on the Loader's MODEL, against our scheduler configured by
``lcm_plugin.recipes_diffusers.scheduler_for`` (tested equal to each adapter's published diffusers code in
tests/recipes) at the recipe's timesteps. Units: diffusers latents (ComfyUI LATENT * 0.18215).
"""

from __future__ import annotations

import pytest
import torch

from lcm_plugin.adapters import recipe_table
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.recipes_diffusers import scheduler_for
from tests.comfyui.comfy_process import capture_latent, run_workflows, tensor_conditioning, tensor_latent
from tests.comfyui_nodes.reference import SD_SCALING_FACTOR, lcm_reference
from tests.comfyui_nodes.workflow_env import lora_tensors

TOLERANCE = 1e-4
SHAPE = (1, 4, 8, 8)
# lcm-full is a full checkpoint's recipe (its guidance embedding: test_full_lcm.py), not a LoRA's
RECIPES = [name for name in recipe_table.RECIPES if name != "lcm-full"]
IMG2IMG = ["lcm-lora", "tcd", "hyper-nstep-4", "lightning-4step", "dmd2-4step"]
CASES = [(name, 1.0) for name in RECIPES] + [(name, 0.5) for name in IMG2IMG]


def _zero_lora(ckpt, folder, recipe) -> str:
    from safetensors.torch import save_file

    tensors = {
        k: (torch.zeros_like(v) if ".lora_up." in k else v) for k, v in lora_tensors(ckpt, seed=1).items()
    }
    name = f"{recipe.name}.safetensors"
    save_file(tensors, str(folder / name), metadata={"lcm_plugin.recipe": recipe.to_metadata()})
    return name


def _prompts(ckpt_name: str, lora: str, recipe, denoise: float, seed: int) -> list[dict]:
    base = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "LCMPluginLoraLoader", "inputs": {"model": ["4", 0], "lora_name": lora,
              "strength_model": 1.0, "strength_clip": 1.0, "steps": 0, "denoise": denoise}},
        "21": tensor_conditioning("cond"),
        "22": tensor_conditioning("uncond"),
        "23": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        if denoise == 1.0
        else tensor_latent("x0"),
    }  # fmt: skip
    custom = {**base, "3": {"class_type": "SamplerCustom", "inputs": {
        "model": ["2", 0], "add_noise": True, "noise_seed": seed, "cfg": ["2", 4], "positive": ["21", 0],
        "negative": ["22", 0], "sampler": ["2", 2], "sigmas": ["2", 3], "latent_image": ["23", 0]}}}  # fmt: skip
    ksampler = {**base, "3": {"class_type": "KSampler", "inputs": {
        "model": ["2", 0], "seed": seed, "steps": recipe.default_steps, "cfg": ["2", 4], "sampler_name": "lcm_exact",
        "scheduler": "lcm_grid", "positive": ["21", 0], "negative": ["22", 0], "latent_image": ["23", 0],
        "denoise": denoise}}}  # fmt: skip
    return [{**p, "99": capture_latent(["3", 0], "final")} for p in (custom, ksampler)]


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    ckpt = tiny_checkpoint("sd15")
    folder = tmp_path_factory.mktemp("recipe_loras")
    loras = {name: _zero_lora(ckpt, folder, recipe_table.RECIPES[name]) for name in RECIPES}
    generator = torch.Generator().manual_seed(8)
    cond, uncond = torch.randn(1, 77, 768, generator=generator), torch.randn(1, 77, 768, generator=generator)
    x0 = torch.randn(SHAPE, generator=generator)
    plain = "style_lora.safetensors"  # no recipe in its metadata, not in the registry
    from safetensors.torch import save_file

    save_file(lora_tensors(ckpt, seed=2), str(folder / plain))
    prompts = []
    for i, (name, denoise) in enumerate(CASES):
        prompts += _prompts(ckpt.name, loras[name], recipe_table.RECIPES[name], denoise, 900 + i)
    reports = {"wrong_steps": (loras["lightning-4step"], 6), "unknown": (plain, 0)}
    for lora, steps in reports.values():
        prompts.append({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt.name}},
            "2": {"class_type": "LCMPluginLoraLoader", "inputs": {"model": ["4", 0], "lora_name": lora,
                  "strength_model": 1.0, "strength_clip": 1.0, "steps": steps, "denoise": 1.0}},
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["2", 5]}},
        })  # fmt: skip
    results = run_workflows(
        prompts,
        models={"checkpoints": [ckpt.path], "loras": [folder / f for f in [*loras.values(), plain]]},
        tensors={"cond": cond, "uncond": uncond, "x0": x0 / SD_SCALING_FACTOR},
        # PyTorch's attention, as diffusers uses: recipes at CFG 7.5 (PCM) amplify the 1e-6 difference of
        # ComfyUI's default sub-quadratic CPU attention past 1e-4
        comfy_args=("--use-pytorch-cross-attention",),
        timeout=1800,
    )
    unet, config = ckpt.diffusers_unet(), LCMPluginScheduler().config
    out = {"reports": {}}
    for key, result in zip(reports, results[2 * len(CASES) :], strict=True):
        assert result.success, (key, result.error, result.validation_error)
        out["reports"][key] = result.outputs["5"]["text"][0]
    for i, (name, denoise) in enumerate(CASES):
        recipe = recipe_table.RECIPES[name]
        reference = lcm_reference(
            unet, prediction_type="epsilon", steps=recipe.default_steps, denoise=denoise, cfg=recipe.cfg, gamma=1.0,
            seed=900 + i, cond=cond, uncond=uncond, shape=SHAPE, init_latent=None if denoise == 1.0 else x0,
            scheduler=scheduler_for(config, recipe), timesteps=recipe.timesteps_for(recipe.default_steps, denoise),
        )  # fmt: skip
        for path, result in zip(("custom", "ksampler"), results[2 * i : 2 * i + 2], strict=True):
            assert result.success, (name, path, result.error, result.validation_error, result.node_errors)
            out[(name, denoise, path)] = (result.latents["final"] * SD_SCALING_FACTOR, reference)
    return out


@pytest.mark.parametrize(("name", "denoise"), CASES, ids=[f"{n}-denoise{d}" for n, d in CASES])
@pytest.mark.parametrize("path", ["custom", "ksampler"])
def test_recipe_in_comfyui_equals_our_diffusers_path(runs, name, denoise, path):
    """<= 1e-4, times cfg / 2 for the CFG-7.5 recipes (PCM normal-CFG): ComfyUI combines CFG on x0 in its VE space
    and diffusers on epsilon -- the same maths, but float32 rounding of x0 = x - sigma * eps (|x| ~ 15 at t = 999)
    that the guidance scale multiplies."""
    ours, reference = runs[(name, denoise, path)]
    assert ours.shape == reference.shape and torch.isfinite(ours).all()
    cfg = recipe_table.RECIPES[name].cfg
    assert (ours - reference).abs().max().item() <= TOLERANCE * max(1.0, cfg / 2)


def test_the_report_names_the_right_step_count_and_unknown_files_fall_back_to_plain_lcm(runs):
    wrong, unknown = runs["reports"]["wrong_steps"], runs["reports"]["unknown"]
    assert "lightning-4step.safetensors: an adapter (by metadata), recipe lightning-4step" in wrong
    assert "distilled for exactly 4 step(s), not 6; use 4 steps" in wrong
    assert "style_lora.safetensors: not a known few-step adapter" in unknown
    assert "sampling it as plain LCM (recipe lcm-lora)" in unknown and unknown.count("\n") == 0  # one line
