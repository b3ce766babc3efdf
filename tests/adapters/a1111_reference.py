"""An independent re-statement of how AUTOMATIC1111 webui (1.8-1.10, extensions-builtin/Lora/networks.py
``load_network``) finds the module for each kohya LoRA key, used to check our files.

From reading that code: the module name is the key up to its first "."; diffusers-style names are rewritten
by ``convert_diffusers_name_to_compvis`` (down/mid/up blocks to input/middle/output blocks, resnet parts to
in_layers/out_layers/emb_layers/skip_connection, downsampler ``input_blocks_{3+3x}_0_op``, upsampler
``output_blocks_{2+3x}_{2 if x > 0 else 1}_conv`` -- the SD1.x layout); if no module has that name,
``lora_unet`` is replaced by ``diffusion_model`` (LDM-named keys, as kohya writes for SDXL). Module names
are the LDM model's ``named_modules()`` with "." replaced by "_".
"""

from __future__ import annotations

import re

_RESNET = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}


def _to_compvis(key: str) -> str:
    m = re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        x, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        rest = _RESNET.get(rest, rest) if kind == "resnets" else rest
        return f"diffusion_model_input_blocks_{1 + 3 * x + i}_{1 if kind == 'attentions' else 0}_{rest}"
    m = re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        kind, i, rest = m[1], int(m[2]), m[3]
        rest = _RESNET.get(rest, rest) if kind == "resnets" else rest
        return f"diffusion_model_middle_block_{1 if kind == 'attentions' else 2 * i}_{rest}"
    m = re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        x, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        rest = _RESNET.get(rest, rest) if kind == "resnets" else rest
        return f"diffusion_model_output_blocks_{3 * x + i}_{1 if kind == 'attentions' else 0}_{rest}"
    m = re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key)
    if m:
        return f"diffusion_model_input_blocks_{3 + 3 * int(m[1])}_0_op"
    m = re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key)
    if m:
        x = int(m[1])
        return f"diffusion_model_output_blocks_{2 + 3 * x}_{2 if x > 0 else 1}_conv"
    return key


def a1111_unmatched_keys(lora_keys: set[str], ldm_module_paths: set[str]) -> set[str]:
    """Keys A1111 would report as "didn't match" for a model whose UNet modules are ``ldm_module_paths``."""
    mapping = {"diffusion_model_" + p.replace(".", "_") for p in ldm_module_paths}
    failed = set()
    for key in lora_keys:
        base = key.split(".", 1)[0]
        name = _to_compvis(base)
        if name not in mapping and "lora_unet" in base:
            name = base.replace("lora_unet", "diffusion_model")
        if name not in mapping:
            failed.add(key)
    return failed
