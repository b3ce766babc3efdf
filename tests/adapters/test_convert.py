"""Lossless conversion between peft/diffusers and kohya, exact tensors and alphas."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lcm_plugin.adapters.convert import (
    adapter_from_state_dict,
    convert_file,
    load_adapter,
    save_kohya_lora,
    to_diffusers_state_dict,
    to_kohya_state_dict,
)
from lcm_plugin.adapters.formats import parse_keys
from lcm_plugin.adapters.safetensors_io import save_atomic


def _with_alpha(peft_sd, alpha):
    adapter = adapter_from_state_dict(peft_sd)
    for mod in adapter.modules.values():
        mod.alpha = torch.tensor(float(alpha))
    return adapter


def _assert_same(a, b):
    assert set(a.modules) == set(b.modules)
    for name, m in a.modules.items():
        n = b.modules[name]
        assert torch.equal(m.down, n.down) and torch.equal(m.up, n.up), name
        assert m.down.dtype == n.down.dtype
        assert m.alpha_value == n.alpha_value, name
        if m.alpha is not None:  # a missing alpha (scale 1) is written as alpha = rank
            assert m.alpha.dtype == n.alpha.dtype, name


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_kohya_diffusers_round_trip_is_exact(sd15_lora, layout):
    _, peft_sd = sd15_lora
    original = _with_alpha(peft_sd, 8)
    kohya, kmeta = to_kohya_state_dict(original, "sd15", layout)
    assert len(kohya) == 3 * 278  # the real SD1.5 LCM-LoRA has 834 tensors: 278 modules x (down, up, alpha)
    back = adapter_from_state_dict(kohya, kmeta)
    _assert_same(original, back)
    dif, dmeta = to_diffusers_state_dict(back)
    again = adapter_from_state_dict(dif, dmeta)
    _assert_same(original, again)
    kohya2, _ = to_kohya_state_dict(again, "sd15", layout)
    assert kohya2.keys() == kohya.keys()
    assert all(torch.equal(kohya[k], kohya2[k]) and kohya[k].dtype == kohya2[k].dtype for k in kohya)


def test_mixed_ranks_and_alphas_survive_the_diffusers_metadata(sd15_lora):
    _, peft_sd = sd15_lora
    adapter = _with_alpha(peft_sd, 8)
    names = sorted(adapter.modules)
    adapter.modules[names[0]].down = adapter.modules[names[0]].down[:2].clone()
    adapter.modules[names[0]].up = adapter.modules[names[0]].up[:, :2].clone()
    adapter.modules[names[1]].alpha = torch.tensor(3.25, dtype=torch.float16)
    dif, meta = to_diffusers_state_dict(adapter)
    cfg = json.loads(meta["lora_adapter_metadata"])
    path0, path1 = names[0].split(".", 1)[1], names[1].split(".", 1)[1]
    assert cfg["unet.rank_pattern"] == {path0: 2}
    assert cfg["unet.alpha_pattern"] == {path1: 3.25}
    back = adapter_from_state_dict(dif, meta)
    assert back.modules[names[0]].rank == 2 and back.modules[names[1]].alpha_value == 3.25
    assert back.modules[names[2]].alpha_value == 8.0


def test_save_kohya_lora_from_peft_state_dict_with_alpha_pattern(tmp_path, sd15_lora):
    _, peft_sd = sd15_lora
    out = save_kohya_lora(
        peft_sd,
        tmp_path / "trained.safetensors",
        arch="sd15",
        lora_alpha=8,
        alpha_pattern={"mid_block.attentions.0.proj_in": 2},
    )
    adapter = load_adapter(out)
    assert adapter.modules["unet.mid_block.attentions.0.proj_in"].alpha_value == 2.0
    assert adapter.modules["unet.mid_block.attentions.0.proj_out"].alpha_value == 8.0
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("kind, fixture", [("sdxl", "sdxl_lora"), ("ssd1b", "ssd1b_lora")])
def test_sdxl_family_round_trip_in_both_layouts(kind, fixture, request):
    _, peft_sd = request.getfixturevalue(fixture)
    original = _with_alpha(peft_sd, 2)
    for layout in ("ldm", "diffusers"):
        kohya, meta = to_kohya_state_dict(original, kind, layout)
        assert all(k.startswith("lora_unet_") for k in kohya)
        if layout == "ldm":
            assert any("_input_blocks_7_1_transformer_blocks_" in k for k in kohya)
        _assert_same(original, adapter_from_state_dict(kohya, meta))


def test_text_encoder_modules_use_kohya_te_prefixes():
    g = torch.Generator().manual_seed(0)
    sd = {}
    for comp, hidden in (("text_encoder", 768), ("text_encoder_2", 1280)):
        for mod in ("self_attn.q_proj", "mlp.fc1"):
            sd[f"{comp}.text_model.encoder.layers.0.{mod}.lora_A.weight"] = torch.randn(
                2, hidden, generator=g
            )
            sd[f"{comp}.text_model.encoder.layers.0.{mod}.lora_B.weight"] = torch.randn(
                hidden, 2, generator=g
            )
    adapter = adapter_from_state_dict(sd)
    kohya, meta = to_kohya_state_dict(adapter, "sdxl")
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in kohya
    _assert_same(adapter, adapter_from_state_dict(kohya, meta))
    sd15_kohya, _ = to_kohya_state_dict(
        adapter_from_state_dict({k: v for k, v in sd.items() if k.startswith("text_encoder.")}), "sd15"
    )
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha" in sd15_kohya


def test_old_diffusers_attention_processor_names_are_understood():
    parsed = parse_keys(
        [
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight",
        ]
    )
    assert parsed.format == "diffusers-old"
    assert set(parsed.modules) == {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    }


def test_keys_that_would_be_dropped_are_refused():
    sd = {
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.zeros(2, 4, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.zeros(4, 2, 1, 1),
        "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": torch.zeros(1),
    }
    with pytest.raises(ValueError, match="LyCORIS/DoRA"):
        adapter_from_state_dict(sd)
    sd.pop("lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a")
    sd["some_embedding.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="refusing to convert rather than drop them"):
        adapter_from_state_dict(sd)


def test_convert_file_casts_dtype_and_leaves_no_temp_files(tmp_path, sd15_lora):
    _, peft_sd = sd15_lora
    src = tmp_path / "in.safetensors"
    tensors, meta = to_diffusers_state_dict(_with_alpha(peft_sd, 8))
    save_atomic(tensors, src, meta)
    result = convert_file(src, tmp_path / "out.safetensors", to="kohya", dtype="fp16")
    assert result.arch == "sd15" and result.layout == "diffusers" and result.modules == 278
    adapter = load_adapter(result.output)
    assert {m.down.dtype for m in adapter.modules.values()} == {torch.float16}
    assert {m.alpha_value for m in adapter.modules.values()} == {8.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors", "out.safetensors"]
    mask = os.umask(0)
    os.umask(mask)
    assert result.output.stat().st_mode & 0o777 == 0o666 & ~mask  # what open() gives, not mkstemp's 0600
    with pytest.raises(ValueError, match="output path equals input path"):
        convert_file(src, src)
    with pytest.raises(ValueError, match="unknown dtype"):
        convert_file(src, tmp_path / "x.safetensors", dtype="fp8")
