"""The extension's host-free part: settings, WebUI-worded checks, metadata-declared prediction types (no WebUI)."""

from __future__ import annotations

import pytest
import torch

from lcm_plugin import core
from lcm_plugin.adapters.safetensors_io import save_atomic
from lcm_plugin.k_sampler import lcm_sigmas
from lcm_plugin.webui import params


def test_defaults_and_infotext_round_trip():
    p = params.LCMParams.from_values()
    assert (p.gamma, p.original_inference_steps) == (1.0, 50)
    # pasted infotext gives strings; the API gives numbers; gradio's Number gives floats
    restored = params.LCMParams.from_values(*(str(v) for v in params.LCMParams(0.3, 25).infotext().values()))
    assert restored == params.LCMParams(0.3, 25)
    assert params.LCMParams.from_values(0.5, 50.0).original_inference_steps == 50
    assert params.LCMParams(0.3, 25).infotext() == {"LCM gamma": 0.3, "LCM original steps": 25}


@pytest.mark.parametrize(
    ("gamma", "steps", "message"),
    [
        (1.5, 50, r"LCM gamma must be a number in \[0, 1\]"),
        (float("nan"), 50, r"LCM gamma must be a number in \[0, 1\]"),
        ("lots", 50, "LCM gamma must be a number, got 'lots'"),
        (1.0, 0, r"LCM original steps .* must be a whole number in \[1, 1000\]"),
        (1.0, 12.5, r"LCM original steps .* must be a whole number in \[1, 1000\], got 12.5"),
        (True, 50, "LCM gamma must be a number, got True"),
    ],
)
def test_bad_settings_are_refused_in_webui_words(gamma, steps, message):
    with pytest.raises(ValueError, match=message):
        params.LCMParams.from_values(gamma, steps)


def test_steps_above_n_denoise_zero_and_too_weak_strength():
    p = params.LCMParams()
    params.check_request(50, p)
    params.check_request(4, p, 0.5)
    with pytest.raises(ValueError, match="60 sampling steps is more than the 50 timesteps of the LCM grid"):
        params.check_request(60, p)
    with pytest.raises(
        ValueError, match=r"Denoising strength 0 leaves nothing to denoise; set it in \(0, 1\]"
    ):
        params.check_request(4, p, 0)
    with pytest.raises(
        ValueError, match="keeps only 2 of the 50 LCM grid timesteps, fewer than the 4 sampling"
    ):
        params.check_request(4, p, 0.05)
    with pytest.raises(ValueError, match="Sampling steps must be at least 1"):
        params.check_request(0, p)


def test_check_request_agrees_with_the_engine():
    """Whatever the WebUI check lets through, the engine's grid accepts (and the reverse), for N = 50 and 25."""
    for n in (50, 25):
        for steps in (1, 4, 8, 25, 50):
            for strength in (None, 1.0, 0.5, 0.1, 0.02):
                try:
                    params.check_request(steps, params.LCMParams(1.0, n), strength)
                    ok = True
                except ValueError:
                    ok = False
                try:
                    core.lcm_timesteps(steps, n, 1000, 1.0 if strength is None else strength)
                    engine_ok = True
                except ValueError:
                    engine_ok = False
                assert ok == engine_ok, (n, steps, strength)


def test_alphas_cumprod_from_sigmas_round_trips_the_lcm_grid():
    abar = core.sd_alphas_cumprod()
    table = ((1 - abar) / abar) ** 0.5
    back = params.alphas_cumprod_from_sigmas(table)
    torch.testing.assert_close(back, abar.float(), rtol=1e-6, atol=0)
    sigmas = lcm_sigmas(4, back)
    t, _ = core.nearest_timesteps(sigmas[:-1], abar)
    assert t.tolist() == [999, 759, 499, 259]


@pytest.mark.parametrize(
    ("metadata", "declared"),
    [
        ({"lcm_plugin.prediction_type": "v_prediction"}, "v_prediction"),
        ({"lcm_plugin.prediction_type": "epsilon"}, "epsilon"),
        ({"modelspec.prediction_type": "v"}, "v_prediction"),
        ({"modelspec.prediction_type": "sample"}, None),
        ({}, None),
    ],
)
def test_checkpoint_metadata_declares_the_prediction_type(tmp_path, metadata, declared):
    path = tmp_path / "model.safetensors"
    save_atomic({"model.diffusion_model.x": torch.zeros(1)}, path, metadata)
    assert params.checkpoint_prediction_type(path) == declared


def test_unreadable_or_pickle_checkpoints_declare_nothing(tmp_path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"PK\x03\x04 not opened")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 4)
    assert params.checkpoint_prediction_type(pickle) is None
    assert params.checkpoint_prediction_type(broken) is None
    assert params.checkpoint_prediction_type(None) is None


def test_prediction_type_mismatch_says_how_to_fix_the_model_setting():
    params.check_prediction_type("epsilon", None)
    params.check_prediction_type("v_prediction", "v_prediction")
    with pytest.raises(
        ValueError,
        match=r"declares prediction type 'v_prediction' .* loaded it as 'epsilon'.*parameterization: \"v\"",
    ):
        params.check_prediction_type("epsilon", "v_prediction", "checkpoint sd21-v")
    with pytest.raises(ValueError, match="remove the .yaml"):
        params.check_prediction_type("v_prediction", "epsilon")
    with pytest.raises(ValueError, match="runs as 'const' in this WebUI .*Pick another sampler"):
        params.check_prediction_type("const", None)


# -- few-step recipes (host-free part of the extension) ----------------------------------------------------------
def test_recipe_settings_parse_and_bad_names_are_refused():
    from lcm_plugin.webui.params import RECIPE_AUTO, recipe_choices

    assert params.LCMParams.from_values().recipe == RECIPE_AUTO
    p = params.LCMParams.from_values("0.7", "50", "tcd", "True")
    assert (p.gamma, p.recipe, p.gamma_override) == (0.7, "tcd", True)
    assert params.LCMParams.from_values(1.0, 50, "", None).recipe == RECIPE_AUTO  # gradio's empty dropdown
    assert recipe_choices()[:3] == ["Auto", "Off", "lcm-lora"] and "lightning-4step" in recipe_choices()
    with pytest.raises(
        ValueError, match=r"LCM Exact: LCM recipe 'hyper' is unknown; pick Auto, Off or one of lcm-lora"
    ):
        params.LCMParams.from_values(1.0, 50, "hyper")


def _lora_file(path, metadata=None):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, str(path), metadata=metadata)
    return path


def test_lora_names_in_prompt():
    from lcm_plugin.webui.recipes import lora_names_in_prompt

    prompt = "a fox <lora:Hyper-SDXL-4steps-lora:1>, <lyco:style:0.5> <LORA:sub/thing> <lora:style:0.2>"
    assert lora_names_in_prompt(prompt) == ["Hyper-SDXL-4steps-lora", "style", "sub/thing"]
    assert lora_names_in_prompt("") == []


def test_recipe_comes_from_the_menu_or_the_lora_in_the_prompt(tmp_path):
    from lcm_plugin.adapters import recipe_table
    from lcm_plugin.webui.recipes import choose_recipe

    loras = tmp_path / "Lora"
    _lora_file(loras / "sub" / "Hyper-SDXL-4steps-lora.safetensors")  # known by its registry file name
    _lora_file(loras / "style.safetensors")
    _lora_file(loras / "mine.safetensors", {"lcm_plugin.recipe": recipe_table.get("tcd").to_metadata()})
    auto = params.LCMParams.from_values()
    chosen = choose_recipe(auto, "a fox <lora:style:0.7> <lora:Hyper-SDXL-4steps-lora:1>", [loras])
    assert chosen.recipe.name == "hyper-nstep-4" and chosen.gamma == 0.0
    assert chosen.notices[0].startswith("LCM Exact: style.safetensors: not a known few-step adapter")
    assert "registry adapter hyper-sdxl-4step (by file name" in chosen.notices[1]
    assert choose_recipe(auto, "<lora:mine:1>", [loras]).recipe.name == "tcd"
    plain = choose_recipe(params.LCMParams.from_values(0.5), "a fox <lora:style:1> <lora:missing:1>", [loras])
    assert plain.recipe is None and plain.gamma == 0.5 and len(plain.notices) == 1
    off = choose_recipe(params.LCMParams.from_values(1.0, 50, "Off"), "<lora:mine:1>", [loras])
    assert off.recipe is None and off.notices == ()
    menu = choose_recipe(params.LCMParams.from_values(0.6, 50, "tcd"), "", [loras])
    assert (menu.recipe.name, menu.gamma) == ("tcd", 0.3)  # the recipe's gamma unless overridden
    override = choose_recipe(params.LCMParams.from_values(0.6, 50, "tcd", True), "", [loras])
    assert override.gamma == 0.6
    resolved = choose_recipe(auto, "<lora:alias:1>", [], {"alias": str(loras / "mine.safetensors")})
    assert resolved.recipe.name == "tcd"  # the WebUI's own LoRA list (Forge's networks) wins
