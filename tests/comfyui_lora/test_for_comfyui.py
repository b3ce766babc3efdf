"""The LCM-LoRA Loader's rules without ComfyUI: formats, conversion, architecture, and the all-keys-load check.

ComfyUI's key map comes from ``tests.adapters.comfy_reference`` (an independent re-statement of ComfyUI's key
matching); test_real_comfyui.py checks the same rules inside a real ComfyUI.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from lcm_plugin.adapters.for_comfyui import (
    check_all_keys_load,
    check_lora_for_model,
    comfy_unloaded_keys,
    load_lora_for_comfyui,
    loadable_key_map,
    model_arch,
)
from lcm_plugin.adapters.inspection import ArchGuess
from lcm_plugin.adapters.safetensors_io import read_header
from tests.adapters.comfy_reference import comfy_key_map
from tests.adapters.comfy_reference import comfy_unloaded_keys as reference_unloaded_keys
from tests.comfyui_lora.lora_files import (
    ALPHA,
    ONE_LEVEL_COMFY_CONFIG,
    RANK,
    kohya_tensors,
    one_level_ldm_shapes,
    one_level_peft_lora,
    pickle_bytes,
    save_diffusers_lora,
    save_kohya_lora,
    save_raw_peft_lora,
    sdxl_kohya_bytes,
    two_level_kohya_bytes,
)

MODULES = 96  # LCM targets of the one-level UNet


@pytest.fixture(scope="module")
def lora():
    return one_level_peft_lora()


@pytest.fixture(scope="module")
def comfy():
    """(ComfyUI's key map for the one-level SD15 UNet, cut to its weights; the weights' shapes)."""
    shapes = one_level_ldm_shapes()
    return loadable_key_map(comfy_key_map(ONE_LEVEL_COMFY_CONFIG), shapes), shapes


def _check(state_dict, comfy, clip=False, name="x.safetensors"):
    key_map, shapes = comfy
    return check_all_keys_load(
        state_dict, key_map, shapes, lora_name=name, model_name="SD15 model", clip=clip
    )


def test_diffusers_file_is_converted_losslessly_and_every_key_loads(tmp_path, lora, comfy):
    sd, cfg = lora
    path = save_diffusers_lora(sd, cfg, tmp_path / "diffusers.safetensors")
    skipped = comfy_unloaded_keys(read_header(path).tensors, comfy[0])
    assert any(".attn1.to_q." in k for k in skipped)  # what ComfyUI's own loader would drop
    assert not any(".resnets.0.conv1." in k for k in skipped)  # (only attention names are the problem)
    got = load_lora_for_comfyui(path, arch="sd15", model_name="SD15")
    assert got.converted and got.modules == MODULES and got.arch.name == "sd15"
    want = kohya_tensors(sd, ALPHA)  # hand-written kohya names, alpha 8 from diffusers' metadata
    assert got.state_dict.keys() == want.keys()
    assert all(torch.equal(got.state_dict[k], v) for k, v in want.items())
    assert _check(got.state_dict, comfy) == MODULES


def test_raw_peft_file_keeps_scale_one(tmp_path, lora, comfy):
    sd, _ = lora
    got = load_lora_for_comfyui(save_raw_peft_lora(sd, tmp_path / "peft.safetensors"), arch="sd15")
    assert got.source_format == "peft" and got.converted
    alphas = {float(v) for k, v in got.state_dict.items() if k.endswith(".alpha")}
    assert alphas == {float(RANK)}  # no alpha stored: peft and ComfyUI both scale by 1
    assert _check(got.state_dict, comfy) == MODULES


def test_kohya_file_is_passed_through_untouched(tmp_path, lora, comfy):
    sd, _ = lora
    path = save_kohya_lora(sd, tmp_path / "kohya.safetensors")
    got = load_lora_for_comfyui(path, arch="sd15")
    assert not got.converted and got.source_format == "kohya"
    want = kohya_tensors(sd, ALPHA)
    assert got.state_dict.keys() == want.keys()
    assert all(torch.equal(got.state_dict[k], v) for k, v in want.items())
    assert _check(got.state_dict, comfy) == MODULES


def test_unloaded_keys_agree_with_the_reference_restatement(tmp_path, lora, comfy):
    sd, cfg = lora
    key_map = comfy_key_map(ONE_LEVEL_COMFY_CONFIG)
    for keys in (
        set(read_header(save_diffusers_lora(sd, cfg, tmp_path / "d.safetensors")).tensors),
        {f"base_model.model.{k}" for k in sd},
        set(kohya_tensors(sd, ALPHA)),
        {"lora_unet_nowhere.lora_up.weight", "lora_unet_nowhere.lora_down.weight"},
    ):
        assert comfy_unloaded_keys(keys, key_map) == reference_unloaded_keys(keys, key_map)[0]


def test_lora_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "xl.safetensors"
    path.write_bytes(sdxl_kohya_bytes())
    with pytest.raises(
        ValueError,
        match=r"xl.safetensors is a LoRA for Stable Diffusion XL \(cross-attention context dim 2048.*\), but "
        r"the MODEL is Stable Diffusion 1.x \(SD15\); pick a LoRA made for Stable Diffusion 1.x",
    ):
        load_lora_for_comfyui(path, arch="sd15", model_name="SD15")


def test_arch_check_leaves_undecidable_cases_to_the_key_check():
    check_lora_for_model(ArchGuess("sdxl", ["few modules"]), "ssd1b", "x", "SSD1B")  # SSD-1B looks like SDXL
    check_lora_for_model(ArchGuess(None), "sd15", "x", "SD15")  # nothing to tell
    check_lora_for_model(ArchGuess("sd15"), None, "x", "Segmind_Vega")  # a family we do not map
    with pytest.raises(ValueError, match=r"SSD-1B .*but the MODEL is Stable Diffusion XL"):
        check_lora_for_model(ArchGuess("ssd1b", ["4 transformer blocks"]), "sdxl", "x", "SDXL")


def test_model_config_names_map_to_architectures():
    assert [model_arch(n) for n in ("SD15", "SD20", "SD21UnclipH", "SDXL", "SSD1B")] == [
        "sd15",
        "sd2",
        "sd2",
        "sdxl",
        "ssd1b",
    ]
    assert model_arch("Segmind_Vega") is None and model_arch("Flux") is None


def _header_only(tensors: dict) -> bytes:
    header = json.dumps(tensors).encode()
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "kind, match",
    [
        ("pickle", r"bad.safetensors is a zip archive \(torch.save format, i.e. pickle inside\), not "
         r"safetensors; refusing to unpickle it"),
        ("truncated", r"bad.safetensors is truncated: tensors need \d+ bytes, file has \d+; download it again"),
        ("empty", r"bad.safetensors is truncated or empty \(0 bytes\)"),
        ("garbage", r"bad.safetensors is not a safetensors file"),
        ("bad_data", r"bad.safetensors is corrupt \(.*\); download or copy it again"),
        ("checkpoint", r"no LoRA weights found .* Is this a full model checkpoint"),
        ("lycoris", r"bad.safetensors is a LyCORIS/DoRA adapter .*use ComfyUI's Load LoRA node"),
        ("extra_keys", r"bad.safetensors: 1 keys are not LoRA weights \(lora_unet_x.diff\); they would not be "
         r"loaded"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_with_a_clear_message(tmp_path, lora, kind, match):
    sd, _ = lora
    path = tmp_path / "bad.safetensors"
    good = tmp_path / "good.safetensors"
    save_kohya_lora(sd, good)
    if kind == "pickle":
        path.write_bytes(pickle_bytes(tmp_path / "p.pt"))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\xff" * 4096)
    elif kind == "bad_data":  # the header promises 4x768 floats in 8 bytes
        entry = {"dtype": "F32", "shape": [4, 768], "data_offsets": [0, 8]}
        body = {"lora_unet_x.lora_down.weight": entry, "lora_unet_x.lora_up.weight": dict(entry)}
        body["lora_unet_x.lora_up.weight"]["data_offsets"] = [8, 16]
        path.write_bytes(_header_only(body) + b"\x00" * 16)
    elif kind == "checkpoint":
        save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)}, path)
    elif kind == "lycoris":
        save_file(
            {"lora_unet_x.hada_w1_a": torch.zeros(4, 4), "lora_unet_x.hada_w1_b": torch.zeros(4, 4)}, path
        )
    elif kind == "extra_keys":
        tensors = kohya_tensors(sd, ALPHA) | {"lora_unet_x.diff": torch.zeros(2)}
        save_file(tensors, path)
    with pytest.raises(ValueError, match=match):
        load_lora_for_comfyui(path, arch="sd15", model_name="SD15")


def test_keys_the_model_lacks_fail_with_count_and_names(tmp_path, comfy):
    path = tmp_path / "two.safetensors"
    path.write_bytes(two_level_kohya_bytes())
    got = load_lora_for_comfyui(path, arch="sd15")
    with pytest.raises(
        ValueError,
        match=r"^3 of 6 keys of two.safetensors would not be loaded into this SD15 model \(e.g. "
        r"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha, .*\); ComfyUI would "
        r"silently apply part of the LoRA, so nothing was applied. The LoRA does not match this model",
    ):
        _check(got.state_dict, comfy, name="two.safetensors")


def test_text_encoder_keys_without_clip_ask_for_the_clip(lora, comfy):
    sd, _ = lora
    tensors = kohya_tensors(sd, ALPHA) | {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 4),
    }
    with pytest.raises(
        ValueError,
        match=r"2 of \d+ keys .*\(e.g. lora_te_text_model.*It has text-encoder weights: connect the CLIP",
    ):
        _check(tensors, comfy)


def test_modules_that_do_not_fit_their_weight_are_refused(lora, comfy):
    sd, _ = lora
    key_map, shapes = comfy
    bad = dict(shapes)
    target = key_map["lora_unet_down_blocks_0_attentions_0_proj_in"]
    bad[target] = (640, 320, 1, 1)
    with pytest.raises(ValueError, match=r"1 LoRA modules of x do not fit the weights of this SD15 model"):
        check_all_keys_load(
            kohya_tensors(sd, ALPHA), key_map, bad, lora_name="x", model_name="SD15 model", clip=False
        )


def test_loadable_key_map_keeps_only_weights_the_model_has():
    key_map = {"a": "w.a", "b": "w.b", "c": ("w.c", (0, 0, 4)), "d": ("w.missing", (0, 0, 4))}
    assert loadable_key_map(key_map, {"w.a": (1,), "w.c": (4,)}) == {"a": "w.a", "c": "w.c"}


@pytest.mark.parametrize(
    "module, down, up",
    [
        ("text_encoder.encoder.layers.0.self_attn.q_proj", "lora_A", "lora_B"),  # diffusers file
        ("lora_te_encoder_layers_0_self_attn_q_proj", "lora_down", "lora_up"),  # kohya names of the same
    ],
)
def test_text_encoder_names_without_text_model_get_it_back(tmp_path, lora, module, down, up):
    # transformers 5's CLIPTextModel has no text_model level, so LoRAs saved from it lack it; ComfyUI needs it.
    sd, _ = lora
    te = {f"{module}.{down}.weight": torch.zeros(RANK, 768), f"{module}.{up}.weight": torch.ones(768, RANK)}
    save_file(kohya_tensors(sd, ALPHA) | te, tmp_path / "te.safetensors")
    got = load_lora_for_comfyui(tmp_path / "te.safetensors", arch="sd15")
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert got.converted and torch.equal(
        got.state_dict[f"{name}.lora_up.weight"], te[f"{module}.{up}.weight"]
    )
    assert not any(k.startswith("lora_te_encoder") for k in got.state_dict)


@pytest.mark.parametrize("arch", ["sdxl", None])  # an SDXL model, and a family we do not map (e.g. Vega)
def test_sdxl_diffusers_file_converts_to_names_comfyui_loads(tmp_path, sdxl_lora, arch):
    from tests.adapters.comfy_reference import COMFY_CONFIGS

    _, peft_sd = sdxl_lora
    path = tmp_path / "xl.safetensors"
    save_file({f"unet.{k}": v for k, v in peft_sd.items()}, path)
    got = load_lora_for_comfyui(path, arch=arch)
    assert got.converted and got.arch.name == "sdxl"
    assert comfy_unloaded_keys(got.state_dict, comfy_key_map(COMFY_CONFIGS["sdxl"])) == set()
