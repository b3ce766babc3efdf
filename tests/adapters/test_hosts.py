"""Converted files load in the hosts with zero skipped keys: diffusers (real), ComfyUI (its key matching)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lcm_plugin.adapters.convert import adapter_from_state_dict, convert_file, to_kohya_state_dict
from lcm_plugin.adapters.safetensors_io import read_header, save_atomic
from tests.adapters.comfy_reference import (
    COMFY_CONFIGS,
    comfy_key_map,
    comfy_unloaded_keys,
)
from tests.adapters.conftest import base_copy

HERE = Path(__file__).resolve().parent


def _save_with_diffusers(unet, directory: Path) -> Path:
    """The 'original adapter': written by diffusers' own save_lora_weights, alphas in its metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    meta = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=layers, unet_lora_adapter_metadata=meta
    )
    return directory / "pytorch_lora_weights.safetensors"


def _sd_pipeline(unet):
    from diffusers import LCMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=None,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=LCMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _generate(pipe) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 5, 768, generator=g)
    out = pipe(
        prompt_embeds=embeds,
        num_inference_steps=2,
        guidance_scale=1.0,
        height=16,
        width=16,
        output_type="latent",
        generator=torch.Generator().manual_seed(1),
    )
    return out.images


def _lora_layers(unet) -> int:
    return sum(1 for m in unet.modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0)


def test_converted_kohya_file_loads_in_diffusers_with_identical_output(tmp_path, sd15_lora, caplog):
    unet, _ = sd15_lora
    reference = _generate(_sd_pipeline(unet))  # the original adapter, live in peft
    # The file diffusers itself writes (lora.down/lora.up names): diffusers 0.42 re-loads only the
    # non-attention modules of it; the converted kohya file must bring back all 278.
    original = _save_with_diffusers(unet, tmp_path / "orig")
    kohya = convert_file(original, tmp_path / "kohya.safetensors", to="kohya", arch="sd15").output
    assert all(k.startswith("lora_unet_") for k in read_header(kohya).tensors)
    pipe = _sd_pipeline(base_copy(unet, "sd15"))
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(str(kohya))
    assert _lora_layers(pipe.unet) == 278
    assert not [r for r in caplog.records if "unexpected keys" in r.getMessage()]
    result = _generate(pipe)
    torch.testing.assert_close(result, reference, rtol=0, atol=1e-5)
    pipe.disable_lora()
    plain = _generate(pipe)
    assert (reference - plain).abs().max() > 1e-3  # the adapter really changes the output


def test_diffusers_rejects_ldm_names_for_sd15_which_is_why_auto_layout_uses_diffusers_names(
    tmp_path, sd15_lora
):
    unet, _ = sd15_lora
    original = _save_with_diffusers(unet, tmp_path / "orig")
    ldm = convert_file(original, tmp_path / "ldm.safetensors", to="kohya", arch="sd15", layout="ldm").output
    pipe = _sd_pipeline(base_copy(unet, "sd15"))
    with pytest.raises(Exception, match="not found in the base model"):
        pipe.load_lora_weights(str(ldm))


def test_sdxl_kohya_ldm_file_loads_in_diffusers_with_identical_unet_output(tmp_path, sdxl_lora):
    # The exact calls StableDiffusionXLPipeline.load_lora_weights makes (without importing the SDXL pipeline).
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin as XL

    unet, peft_sd = sdxl_lora
    adapter = adapter_from_state_dict(peft_sd)
    for mod in adapter.modules.values():
        mod.alpha = torch.tensor(2.0)
    tensors, meta = to_kohya_state_dict(adapter, "sdxl")  # auto -> LDM names for SDXL
    assert meta["lcm_plugin.kohya_layout"] == "ldm"
    path = save_atomic(tensors, tmp_path / "xl.safetensors", meta)
    fresh = base_copy(unet, "sdxl")
    state_dict, alphas, metadata = XL.lora_state_dict(
        str(path), unet_config=fresh.config, return_lora_metadata=True
    )
    XL.load_lora_into_unet(state_dict, alphas, fresh, metadata=metadata)
    assert _lora_layers(fresh) == len(adapter.modules)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 5, 2048, generator=g)
    cond = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    with torch.no_grad():
        ref = unet(x, 10, ctx, added_cond_kwargs=cond).sample
        got = fresh(x, 10, ctx, added_cond_kwargs=cond).sample
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kind, layout", [("sd15", "diffusers"), ("sd15", "ldm"), ("sdxl", "ldm"), ("sdxl", "diffusers")]
)
def test_comfyui_key_matching_loads_every_key(kind, layout, sd15_lora, sdxl_lora):
    _, peft_sd = sd15_lora if kind == "sd15" else sdxl_lora
    tensors, _ = to_kohya_state_dict(adapter_from_state_dict(peft_sd), kind, layout)
    unloaded, targets = comfy_unloaded_keys(set(tensors), comfy_key_map(COMFY_CONFIGS[kind]))
    assert unloaded == set()
    assert len(targets) == len(tensors) // 3


def test_comfyui_skips_peft_attention_names_which_is_why_we_convert(sd15_lora):
    _, peft_sd = sd15_lora
    diffusers_keys = {f"unet.{k}" for k in peft_sd}
    unloaded, _ = comfy_unloaded_keys(diffusers_keys, comfy_key_map(COMFY_CONFIGS["sd15"]))
    assert any(".attn1.to_q.lora_A" in k for k in unloaded)


@pytest.mark.skipif(
    not os.environ.get("LCM_PLUGIN_COMFYUI_PATH"),
    reason="set LCM_PLUGIN_COMFYUI_PATH to a ComfyUI checkout to run ComfyUI's own comfy.lora",
)
@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_real_comfyui_loads_every_key(tmp_path, kind, sd15_lora, sdxl_lora):
    _, peft_sd = sd15_lora if kind == "sd15" else sdxl_lora
    tensors, meta = to_kohya_state_dict(adapter_from_state_dict(peft_sd), kind)
    path = save_atomic(tensors, tmp_path / "lora.safetensors", meta)
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "comfy_real_check.py"),
            os.environ["LCM_PLUGIN_COMFYUI_PATH"],
            str(path),
            json.dumps(COMFY_CONFIGS[kind]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"not_loaded": [], "patched": len(tensors) // 3, "missing_targets": []}
