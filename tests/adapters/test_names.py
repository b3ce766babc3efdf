"""Module-name mapping: kohya flattening, diffusers <-> LDM layout, checked against ComfyUI's own walk."""

from __future__ import annotations

import pytest

from lcm_plugin.adapters.kohya_names import ARCHS, diffusers_to_ldm, flatten, ldm_to_diffusers, unflatten
from tests.adapters.comfy_reference import COMFY_CONFIGS, diffusers_to_ldm_map


def lora_target_names(peft_state_dict) -> list[str]:
    """The LoRA target module paths of a peft state dict (the LCM-LoRA target list on a real block layout)."""
    return sorted({k.rsplit(".lora_", 1)[0] for k in peft_state_dict})


def test_brief_example_maps_to_kohya_ldm_name():
    path = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert (
        "lora_unet_" + flatten(diffusers_to_ldm(path, ARCHS["sd15"]))
        == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    )


@pytest.mark.parametrize(
    "flat, dotted",
    [
        (
            "down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0",
            "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0",
        ),
        (
            "up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
            "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj",
        ),
        ("mid_block_resnets_1_time_emb_proj", "mid_block.resnets.1.time_emb_proj"),
        ("output_blocks_2_1_conv", "output_blocks.2.1.conv"),
        ("input_blocks_7_0_skip_connection", "input_blocks.7.0.skip_connection"),
        (
            "text_model_encoder_layers_11_self_attn_out_proj",
            "text_model.encoder.layers.11.self_attn.out_proj",
        ),
        ("text_model_encoder_layers_0_mlp_fc2", "text_model.encoder.layers.0.mlp.fc2"),
    ],
)
def test_unflatten_undoes_kohya_flattening(flat, dotted):
    assert unflatten(flat) == dotted
    assert flatten(dotted) == flat


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_ldm_mapping_matches_comfyui_walk_for_every_lora_target(kind, request):
    reference = diffusers_to_ldm_map(COMFY_CONFIGS[kind])
    names = lora_target_names(request.getfixturevalue(f"{kind}_lora")[1])
    assert len(names) > 50
    for path in names:
        assert diffusers_to_ldm(path, ARCHS[kind]) == reference[path], path


@pytest.mark.parametrize("kind", ["sd15", "sdxl", "ssd1b"])
def test_ldm_mapping_round_trips(kind, request):
    for path in lora_target_names(request.getfixturevalue(f"{kind}_lora")[1]):
        ldm = diffusers_to_ldm(path, ARCHS[kind])
        assert ldm_to_diffusers(unflatten(flatten(ldm))) == path, (path, ldm)


def test_ssd1b_mid_block_without_attention_uses_consecutive_slots():
    assert diffusers_to_ldm("mid_block.resnets.1.conv1", ARCHS["ssd1b"]) == "middle_block.1.in_layers.2"
    assert diffusers_to_ldm("mid_block.resnets.1.conv1", ARCHS["sdxl"]) == "middle_block.2.in_layers.2"
    assert ldm_to_diffusers("middle_block.1.in_layers.2") == "mid_block.resnets.1.conv1"
    assert ldm_to_diffusers("middle_block.1.proj_in") == "mid_block.attentions.0.proj_in"


def test_unknown_module_is_a_clear_error():
    with pytest.raises(ValueError, match="not a known SD UNet module"):
        diffusers_to_ldm("controlnet_cond_embedding.conv_in", ARCHS["sd15"])
    with pytest.raises(ValueError, match="cannot map LDM module"):
        ldm_to_diffusers("input_blocks.x")
