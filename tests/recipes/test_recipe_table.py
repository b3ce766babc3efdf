"""The recipe table: one recipe per registry entry, every value sourced, and ``lcm-plugin adapters list`` shows it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lcm_plugin import core
from lcm_plugin.adapters import recipe_table
from lcm_plugin.adapters.few_step_adapters import FEW_STEP_ADAPTERS, RECIPE_OF
from lcm_plugin.adapters.recipes import Recipe
from lcm_plugin.adapters.registry import all_adapters, every_adapter, find


def test_every_registry_entry_has_a_recipe_with_sources():
    for entry in every_adapter():
        assert entry.name in RECIPE_OF, entry.name
        recipe = recipe_table.get(RECIPE_OF[entry.name])
        assert recipe.sources and all(s.url and s.says for s in recipe.sources), recipe.name
        assert recipe.authors_code, recipe.name
    assert set(RECIPE_OF.values()) <= set(recipe_table.RECIPES)


def test_registry_sha256_and_names_are_well_formed_and_unique():
    names = [e.name for e in every_adapter()]
    assert len(names) == len(set(names))
    digests = [e.sha256 for e in every_adapter() if e.sha256]
    assert len(digests) == len(set(digests)) and all(len(d) == 64 and int(d, 16) >= 0 for d in digests)
    assert [e.name for e in all_adapters()] == [e.name for e in every_adapter() if e not in FEW_STEP_ADAPTERS]
    assert (
        find("tcd-sdxl").url
        == "https://huggingface.co/h1t/TCD-SDXL-LoRA/resolve/main/pytorch_lora_weights.safetensors"
    )
    with pytest.raises(
        ValueError, match=r"unknown adapter 'ByteDance/Hyper-SD'"
    ):  # several entries share that repo
        find("ByteDance/Hyper-SD")


@pytest.mark.parametrize(
    "name, steps, expected",
    [
        ("lcm-lora", 4, [999, 759, 499, 259]),
        ("tcd", 4, [999, 759, 499, 259]),
        ("hyper-nstep-2", 2, [999, 499]),
        ("hyper-nstep-8", 8, [999, 874, 749, 624, 499, 374, 249, 124]),
        ("hyper-sdxl-1step-unet", 1, [800]),
        ("hyper-1step-unified", 1, [999]),
        ("pcm-smallcfg-2", 2, [999, 499]),
        ("pcm-smallcfg-8", 8, [999, 879, 759, 639, 499, 379, 259, 139]),
        ("lightning-4step", 4, [999, 749, 499, 249]),
        ("dmd2-4step", 4, [999, 749, 499, 249]),
    ],
)
def test_timesteps_per_recipe(name, steps, expected):
    assert recipe_table.get(name).timesteps_for(steps) == expected


def test_dmd2_list_is_the_lcm_grid_of_four_and_trailing_spacing():
    dmd2 = list(recipe_table.get("dmd2-4step").timesteps[4])
    assert dmd2 == core.lcm_timesteps(4, 4).tolist() == core.trailing_timesteps(4).tolist()


@pytest.mark.parametrize(
    "name, steps, strength, expected",
    [
        ("lcm-lora", 4, 0.5, [499, 379, 259, 139]),  # LCM: every step inside the strength's part of the grid
        ("tcd", 4, 0.5, [499, 379, 259, 139]),
        ("lightning-4step", 4, 0.5, [499, 249]),  # fixed timesteps: their tail (diffusers' img2img slice)
        ("hyper-nstep-8", 8, 0.5, [499, 374, 249, 124]),
        ("dmd2-4step", 4, 0.75, [749, 499, 249]),
    ],
)
def test_img2img_strength_on_the_recipes_grid(name, steps, strength, expected):
    assert recipe_table.get(name).timesteps_for(steps, strength) == expected


def test_img2img_rules_match_the_authors_scheduler_classes():
    from diffusers import LCMScheduler, TCDScheduler

    for cls, name in ((LCMScheduler, "lcm-lora"), (TCDScheduler, "tcd")):
        for steps, strength in ((4, 0.5), (2, 0.3), (8, 0.8), (1, 0.2)):
            s = cls()
            s.set_timesteps(steps, strength=strength)
            assert recipe_table.get(name).timesteps_for(steps, strength) == s.timesteps.tolist()


def test_wrong_step_count_and_cfg_get_warnings_that_name_the_right_ones():
    assert recipe_table.get("lightning-4step").steps_warning(6) == (
        "recipe lightning-4step: this adapter was distilled for exactly 4 step(s), not 6; use 4 steps "
        "(expect a poor image otherwise)."
    )
    assert recipe_table.get("lightning-4step").steps_warning(4) is None
    assert "the authors recommend 4-50 steps, not 2" in recipe_table.get("tcd").steps_warning(2)
    assert recipe_table.get("hyper-nstep-8-cfg").cfg_warning(1.0) == (
        "recipe hyper-nstep-8-cfg: the authors use CFG 5-8, not 1 (1 = no guidance)."
    )
    assert recipe_table.get("lcm-lora").cfg_warning(1.5) is None
    assert recipe_table.get("tcd").cfg_warning(0.0) is None  # 0 and 1 both mean "no guidance"
    assert "the authors use CFG 1, not 4" in recipe_table.get("tcd").cfg_warning(4.0)


def test_recipe_metadata_round_trip_and_bad_metadata():
    for recipe in recipe_table.RECIPES.values():
        back = Recipe.from_metadata(recipe.to_metadata())
        assert back.engine_options() == recipe.engine_options()
        assert back.timesteps_for(back.default_steps) == recipe.timesteps_for(recipe.default_steps)
    with pytest.raises(ValueError, match=r"lcm_plugin.recipe in the adapter's metadata is not a recipe"):
        Recipe.from_metadata("{not json")
    with pytest.raises(ValueError, match=r"consistency 'euler' is not supported"):
        Recipe.from_metadata(json.dumps({"name": "x", "title": "x", "consistency": "euler"}))
    with pytest.raises(ValueError, match=r"unknown recipe 'hyper'; known recipes: lcm-lora, lcm-full, tcd"):
        recipe_table.get("hyper")


def test_adapters_list_shows_each_recipe():
    out = subprocess.run(
        [sys.executable, "-m", "lcm_plugin.cli", "adapters", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tcd-sdxl" in out and "h1t/TCD-SDXL-LoRA/pytorch_lora_weights.safetensors" in out
    assert (
        "recipe tcd: TCD, gamma 0.3 on LCM grid N=50 (999,759,499,259); steps 4-50; CFG 1; LoRA scale 1"
        in out
    )
    assert (
        "recipe lightning-4step: Euler (ODE step to x0) on trailing spacing (999,749,499,249); steps 4; CFG 1"
        in out
    )
    assert "recipe dmd2-4step: LCM on timesteps 999,749,499,249 (999,749,499,249); steps 4; CFG 1" in out
    assert "recipe hyper-nstep-8: DDIM (TCD update, gamma 0) on trailing spacing" in out
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "lcm_plugin.cli", "adapters", "list", "--json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    hyper = next(e for e in data if e["name"] == "hyper-sdxl-4step")
    assert hyper["sha256"].startswith("12f81a27") and hyper["size"] == 787359648
    assert hyper["recipe"]["consistency"] == "tcd" and hyper["recipe"]["spacing"] == "trailing"
