"""Against the real Forge modules: our scripts/ module registered in Forge's lists, and sampling through Forge's own
``KDiffusionSampler`` / CFG denoiser / ``KModel`` predictor on a tiny UNet equal to our diffusers scheduler (<= 1e-4).

One run of ``tests/forge/forge_driver.py`` in Forge's venv serves every case (Forge's imports take ~20 s).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from lcm_plugin.adapters import recipe_table
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.k_sampler import lcm_sigmas
from lcm_plugin.recipes_diffusers import scheduler_for
from tests.engine.helpers import tiny_unet
from tests.forge.conftest import REPO

pytestmark = pytest.mark.slow

SEED = 7
CASES = [
    *[
        {"name": f"eps_{steps}_{strength}", "steps": steps, "strength": strength, "seed": SEED}
        for steps in (1, 2, 4, 8)
        for strength in (1.0, 0.5)
    ],
    *[
        {
            "name": f"v_{steps}_{strength}",
            "steps": steps,
            "strength": strength,
            "seed": SEED,
            "prediction_type": "v_prediction",
        }
        for steps in (1, 4)
        for strength in (1.0, 0.5)
    ],
    {"name": "gamma_0.3", "steps": 4, "seed": SEED, "gamma": 0.3},
    {"name": "gamma_0", "steps": 4, "seed": SEED, "gamma": 0.0},
    {"name": "cfg_2", "steps": 4, "seed": SEED, "cfg": 2.0},
    {"name": "n_25", "steps": 4, "seed": SEED, "original_steps": 25},
    {"name": "img2img_n_25", "steps": 3, "seed": SEED, "strength": 0.6, "original_steps": 25},
    {"name": "explicit_lcm_grid", "steps": 4, "seed": SEED, "scheduler": "LCM Grid"},
    {"name": "variation_a", "steps": 4, "seed": SEED, "subseed": 99, "subseed_strength": 0.5},
    {"name": "variation_b", "steps": 4, "seed": SEED, "subseed": 99, "subseed_strength": 0.5},
    # few-step recipes ("LCM recipe" menu, or Auto and a known LoRA in the prompt): our diffusers helper's path
    {"name": "recipe_tcd", "steps": 4, "seed": SEED, "recipe": "tcd"},
    {"name": "recipe_tcd_8", "steps": 8, "seed": SEED, "recipe": "tcd"},
    {
        "name": "recipe_tcd_gamma_0.7",
        "steps": 4,
        "seed": SEED,
        "recipe": "tcd",
        "gamma": 0.7,
        "gamma_override": True,
    },
    {"name": "recipe_tcd_img2img", "steps": 4, "seed": SEED, "recipe": "tcd", "strength": 0.5},
    {"name": "recipe_hyper_4", "steps": 4, "seed": SEED, "recipe": "hyper-nstep-4"},
    {"name": "recipe_hyper_8_cfg", "steps": 8, "seed": SEED, "recipe": "hyper-nstep-8-cfg", "cfg": 5.0},
    {"name": "recipe_hyper_unified_2", "steps": 2, "seed": SEED, "recipe": "hyper-1step-unified"},
    {"name": "recipe_hyper_unet", "steps": 1, "seed": SEED, "recipe": "hyper-sdxl-1step-unet"},
    {"name": "recipe_pcm_8", "steps": 8, "seed": SEED, "recipe": "pcm-smallcfg-8"},
    {"name": "recipe_pcm_lcmlike", "steps": 4, "seed": SEED, "recipe": "pcm-lcmlike"},
    {"name": "recipe_lightning_8", "steps": 8, "seed": SEED, "recipe": "lightning-8step"},
    {
        "name": "recipe_lightning_4_img2img",
        "steps": 4,
        "seed": SEED,
        "recipe": "lightning-4step",
        "strength": 0.5,
    },
    {"name": "recipe_lightning_4_at_6", "steps": 6, "seed": SEED, "recipe": "lightning-4step"},
    {"name": "recipe_dmd2", "steps": 4, "seed": SEED, "recipe": "dmd2-4step"},
    {"name": "recipe_dmd2_img2img", "steps": 4, "seed": SEED, "recipe": "dmd2-4step", "strength": 0.75},
    {"name": "recipe_v_tcd", "steps": 4, "seed": SEED, "recipe": "tcd", "prediction_type": "v_prediction"},
    *[
        {
            "name": f"recipe_{name}",
            "steps": recipe.default_steps,
            "seed": SEED,
            "recipe": name,
            "cfg": recipe.cfg,
        }
        for name, recipe in recipe_table.RECIPES.items()
        if name != "lcm-full"  # its CFG is a guidance embedding, which Forge does not load (README)
    ],  # every recipe at its default steps and CFG
    {
        "name": "auto_lora_in_prompt",
        "steps": 4,
        "seed": SEED,
        "prompt": "a fox <lora:my-tcd:1>",
        "auto": "tcd",
    },
    {"name": "auto_unknown_lora", "steps": 4, "seed": SEED, "prompt": "a fox <lora:style-lora:0.8>"},
    {"name": "bad_steps_above_n", "steps": 60, "seed": SEED},
    {"name": "bad_recipe_name", "steps": 4, "seed": SEED, "recipe": "hyper"},
    {
        "name": "bad_recipe_strength",
        "steps": 2,
        "seed": SEED,
        "recipe": "lightning-2step",
        "strength": 0.3,
        "img2img": True,
    },
    {"name": "bad_denoise_0", "steps": 4, "seed": SEED, "strength": 0.0, "img2img": True},
    {"name": "bad_gamma", "steps": 4, "seed": SEED, "gamma": 1.5},
]


@pytest.fixture(scope="module")
def forge_run(forge_python, forge_copy, tmp_path_factory):
    work = tmp_path_factory.mktemp("forge_modules")
    tiny_unet().save_pretrained(work / "unet")
    loras = work / "data" / "models" / "Lora"
    loras.mkdir(
        parents=True
    )  # the WebUI's LoRA folder (--data-dir WORK/data): one self-distilled TCD adapter
    lora = {
        "lora_unet_x.lora_down.weight": torch.zeros(2, 4),
        "lora_unet_x.lora_up.weight": torch.zeros(4, 2),
    }
    save_file(
        lora,
        loras / "my-tcd.safetensors",
        metadata={"lcm_plugin.recipe": recipe_table.get("tcd").to_metadata()},
    )
    save_file({k: v + 1 for k, v in lora.items()}, loras / "style-lora.safetensors")
    gen = torch.Generator().manual_seed(1)
    shapes = {"x0": (4, 8, 8), "cond": (5, 32), "uncond": (5, 32)}
    inputs = {name: torch.randn(1, *shape, generator=gen) for name, shape in shapes.items()}
    save_file(inputs, work / "inputs.safetensors")
    (work / "cases.json").write_text(json.dumps(CASES))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(
        [str(forge_python), str(REPO / "tests/forge/forge_driver.py"), str(REPO), str(work)],
        cwd=forge_copy, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {
        "inputs": inputs,
        "unet": tiny_unet(),
        "results": load_file(work / "results.safetensors"),
        "lists": json.loads((work / "lists.json").read_text()),
        "errors": json.loads((work / "errors.json").read_text()),
    }


def _reference(unet, inputs, case):
    """Our diffusers scheduler loop, noise from torch.Generator().manual_seed(seed) (the pipeline's generator); for
    recipe cases the scheduler and timesteps of ``apply_recipe`` (tests/recipes: equal to the authors' code)."""
    strength, cfg = case.get("strength", 1.0), case.get("cfg", 1.0)
    name = case.get("recipe") or case.get("auto")
    if name:
        recipe = recipe_table.get(name)
        base = LCMPluginScheduler(prediction_type=case.get("prediction_type", "epsilon"))
        scheduler = scheduler_for(
            base.config, recipe, gamma=case.get("gamma") if case.get("gamma_override") else None
        )
        scheduler.set_timesteps(timesteps=recipe.timesteps_for(case["steps"], strength))
    else:
        scheduler = LCMPluginScheduler(
            prediction_type=case.get("prediction_type", "epsilon"),
            gamma=case.get("gamma", 1.0),
            original_inference_steps=case.get("original_steps", 50),
        )
        scheduler.set_timesteps(case["steps"], strength=strength)
    generator = torch.Generator().manual_seed(case["seed"])
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    if strength == 1.0:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(inputs["x0"], noise, scheduler.timesteps[:1])
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(latents, t, encoder_hidden_states=inputs["cond"]).sample
            if cfg != 1.0:
                uncond = unet(latents, t, encoder_hidden_states=inputs["uncond"]).sample
                out = uncond + cfg * (out - uncond)
            latents = scheduler.step(out, t, latents, generator=generator).prev_sample
    return latents


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c["name"].startswith(("bad_", "variation_"))], ids=lambda c: c["name"]
)
def test_forge_sampler_classes_equal_our_diffusers_scheduler(forge_run, case):
    ours = forge_run["results"][case["name"]]
    reference = _reference(forge_run["unet"], forge_run["inputs"], case)
    assert torch.isfinite(ours).all()
    diff = (ours - reference).abs().max().item()
    print(
        f"{case['name']}: max |Forge - our diffusers| = {diff:.1e} (latent scale {reference.abs().max().item():.1f})"
    )
    # <= 1e-4; at CFG above 2 (PCM normal-CFG: 7.5) times cfg / 2, as in the ComfyUI recipe tests: the CFG
    # combination scales the 1e-6-level float32 difference of the two UNet passes (measured 1.1e-4 once at 7.5)
    cfg = case.get("cfg", 1.0)
    assert diff <= 1e-4 * max(1.0, cfg / 2)


def test_sampler_and_scheduler_in_the_lists_the_ui_and_api_read(forge_run):
    lists = forge_run["lists"]
    assert "LCM Exact" in lists["all_samplers"] and "LCM Exact" in lists["visible_samplers"]
    assert "LCM" in lists["all_samplers"]  # the built-in one is still there, under its own name
    assert lists["samplers_map"]["lcm exact"] == lists["samplers_map"]["lcm_exact"] == "LCM Exact"
    assert {
        "name": "LCM Exact",
        "aliases": ["lcm_exact", "k_lcm_exact"],
        "options": {"scheduler": "lcm_grid"},
    } in lists["api_samplers"]
    assert "LCM Grid" in lists["scheduler_labels"]
    assert {"lcm_grid", "LCM Grid"} <= set(lists["schedulers_map_keys"]) and "lcm_grid" in lists[
        "k_diffusion_scheduler"
    ]
    assert {"name": "lcm_grid", "label": "LCM Grid", "aliases": ["LCMGrid"], "default_rho": -1} in lists[
        "api_schedulers"
    ]
    assert lists["script_titles"] == ["LCM Exact"]
    assert lists["resolved"] == ["LCM Exact", "LCM Grid"]


def test_infotext_restores_sampler_scheduler_and_gamma(forge_run):
    lists = forge_run["lists"]
    parsed = lists["parsed_infotext"]
    assert (parsed["Sampler"], parsed["Schedule type"], parsed["LCM gamma"], parsed["LCM original steps"]) == (
        "LCM Exact", "LCM Grid", "0.3", "50",
    )  # fmt: skip
    assert lists["infotext"]["gamma_0.3"] == {"LCM gamma": "0.3", "LCM original steps": "50"}
    assert lists["infotext"]["explicit_lcm_grid"]["Schedule type"] == "LCM Grid"


def test_variation_seed_reproduces_and_changes_the_noise(forge_run):
    results = forge_run["results"]
    assert torch.equal(results["variation_a"], results["variation_b"])
    assert (results["variation_a"] - results["eps_4_1.0"]).abs().max() > 1e-2


def test_recipes_are_written_to_the_infotext_and_warnings_to_the_ui(forge_run):
    infotext, comments = forge_run["lists"]["infotext"], forge_run["lists"]["comments"]
    assert infotext["recipe_tcd"] == {"LCM gamma": "0.3", "LCM original steps": "50", "LCM recipe": "tcd"}
    assert infotext["recipe_tcd_gamma_0.7"]["LCM gamma override"] == "True"
    assert infotext["recipe_tcd_gamma_0.7"]["LCM gamma"] == "0.7"
    assert infotext["auto_lora_in_prompt"]["LCM recipe"] == "tcd"
    assert comments["auto_lora_in_prompt"] == [
        "LCM Exact: my-tcd.safetensors: an adapter (by metadata), recipe tcd: TCD, gamma 0.3 on LCM grid N=50 "
        "(999,759,499,259); steps 4-50; CFG 1; LoRA scale 1"
    ]
    assert "LCM recipe" not in infotext["auto_unknown_lora"]
    (notice,) = comments["auto_unknown_lora"]
    assert notice.startswith("LCM Exact: style-lora.safetensors: not a known few-step adapter (sha256 ")
    assert comments["recipe_lightning_4_at_6"] == [
        "LCM Exact: recipe lightning-4step: this adapter was distilled for exactly 4 step(s), not 6; use 4 steps "
        "(expect a poor image otherwise)."
    ]
    assert comments["recipe_tcd"] == [] and comments["recipe_hyper_8_cfg"] == []


def test_bad_input_gets_a_clear_message(forge_run):
    errors = forge_run["errors"]
    assert "60 sampling steps is more than the 50 timesteps of the LCM grid" in errors["bad_steps_above_n"]
    assert "LCM recipe 'hyper' is unknown; pick Auto, Off or one of lcm-lora" in errors["bad_recipe_name"]
    assert (
        "LCM Exact (lightning-2step): strength 0.3 keeps none of the 2 timesteps [999, 499]"
        in errors["bad_recipe_strength"]
    )
    assert "Denoising strength 0.0 leaves nothing to denoise" in errors["bad_denoise_0"]
    assert "LCM gamma must be a number in [0, 1]" in errors["bad_gamma"]
    assert set(errors) == {c["name"] for c in CASES if c["name"].startswith("bad_")}


def test_lcm_grid_scheduler_for_other_samplers(forge_run):
    sigmas = torch.tensor(forge_run["lists"]["euler_lcm_grid_sigmas"])
    torch.testing.assert_close(
        sigmas, lcm_sigmas(4, LCMPluginScheduler().alphas_cumprod).float(), rtol=1e-5, atol=0
    )
