"""An independent re-statement of ComfyUI's LoRA key matching, used to check our kohya files.

Mirrors, from reading ComfyUI (comfy/utils.py ``unet_to_diffusers``, comfy/lora.py ``model_lora_keys_unet``
and ``load_lora``, comfy/weight_adapter/lora.py), how ComfyUI decides which LoRA keys it loads:

- the model's own LDM weight names ``diffusion_model.<ldm>.weight`` are matched as ``lora_unet_<ldm flat>``;
- diffusers names from ``unet_to_diffusers`` are matched as ``lora_unet_<diffusers flat>`` and as
  ``unet.<path with .processor. before to_q/k/v/out>`` (so peft attention names are not matched);
- a module loads if ``<name>.lora_up.weight`` (+ ``lora_down``, optional ``.alpha``) or
  ``<name>.lora_B.weight`` (+ ``lora_A``) exist; every other key is reported as "lora key not loaded".

Written independently of lcm_plugin.adapters.kohya_names so it can catch mistakes there.
"""

from __future__ import annotations

_ATTN = ("proj_in", "proj_out", "norm")
_TBLOCK = (
    "norm1",
    "norm2",
    "norm3",
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)
_RES = {
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
    "in_layers.0": "norm1",
    "out_layers.0": "norm2",
}

COMFY_CONFIGS = {
    # num_res_blocks, transformer_depth (input order), transformer_depth_output (consumed from the end),
    # transformer_depth_middle; ComfyUI's values for these families.
    "sd15": {
        "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "transformer_depth_middle": 1,
    },
    "sdxl": {
        "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4],
        "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "transformer_depth_middle": 10,
    },
}


def diffusers_to_ldm_map(cfg: dict) -> dict[str, str]:
    """diffusers module path -> LDM module path, following ComfyUI's unet_to_diffusers walk."""
    out: dict[str, str] = {}
    nrb = cfg["num_res_blocks"]
    depth = list(cfg["transformer_depth"])
    depth_out = list(cfg["transformer_depth_output"])
    levels = len(cfg["channel_mult"])
    for x in range(levels):
        n = 1 + (nrb[x] + 1) * x
        for i in range(nrb[x]):
            for ldm, dif in _RES.items():
                out[f"down_blocks.{x}.resnets.{i}.{dif}"] = f"input_blocks.{n}.0.{ldm}"
            t = depth.pop(0)
            if t > 0:
                for a in _ATTN:
                    out[f"down_blocks.{x}.attentions.{i}.{a}"] = f"input_blocks.{n}.1.{a}"
                for j in range(t):
                    for b in _TBLOCK:
                        out[f"down_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}"] = (
                            f"input_blocks.{n}.1.transformer_blocks.{j}.{b}"
                        )
            n += 1
        out[f"down_blocks.{x}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
    for a in _ATTN:
        out[f"mid_block.attentions.0.{a}"] = f"middle_block.1.{a}"
    for j in range(cfg["transformer_depth_middle"]):
        for b in _TBLOCK:
            out[f"mid_block.attentions.0.transformer_blocks.{j}.{b}"] = (
                f"middle_block.1.transformer_blocks.{j}.{b}"
            )
    for i, n in enumerate((0, 2)):
        for ldm, dif in _RES.items():
            out[f"mid_block.resnets.{i}.{dif}"] = f"middle_block.{n}.{ldm}"
    for x, nb in enumerate(reversed(nrb)):
        n = (nb + 1) * x
        for i in range(nb + 1):
            c = 1
            for ldm, dif in _RES.items():
                out[f"up_blocks.{x}.resnets.{i}.{dif}"] = f"output_blocks.{n}.0.{ldm}"
            t = depth_out.pop()
            if t > 0:
                c += 1
                for a in _ATTN:
                    out[f"up_blocks.{x}.attentions.{i}.{a}"] = f"output_blocks.{n}.1.{a}"
                for j in range(t):
                    for b in _TBLOCK:
                        out[f"up_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}"] = (
                            f"output_blocks.{n}.1.transformer_blocks.{j}.{b}"
                        )
            if i == nb:
                out[f"up_blocks.{x}.upsamplers.0.conv"] = f"output_blocks.{n}.{c}.conv"
            n += 1
    return out


def comfy_key_map(cfg: dict) -> dict[str, str]:
    """LoRA module name -> model weight key, as ComfyUI builds it for a UNet of this config."""
    dif2ldm = diffusers_to_ldm_map(cfg)
    key_map: dict[str, str] = {}
    for ldm in dif2ldm.values():
        weight = f"diffusion_model.{ldm}.weight"
        key_map["lora_unet_" + ldm.replace(".", "_")] = weight
        key_map[f"diffusion_model.{ldm}"] = weight
    for dif, ldm in dif2ldm.items():
        weight = f"diffusion_model.{ldm}.weight"
        key_map["lora_unet_" + dif.replace(".", "_")] = weight
        for prefix in ("", "unet."):
            name = prefix + dif.replace(".to_", ".processor.to_")
            if name.endswith(".to_out.0"):
                name = name[:-2]
            key_map[name] = weight
    return key_map


def comfy_unloaded_keys(lora_keys: set[str], key_map: dict[str, str]) -> tuple[set[str], dict[str, str]]:
    """(keys ComfyUI would report as 'lora key not loaded', loaded module name -> model weight key)."""
    loaded: set[str] = set()
    targets: dict[str, str] = {}
    for name, weight in key_map.items():
        for up, down in ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight")):
            if name + up in lora_keys:
                loaded.update({name + up, name + down})
                if name + ".alpha" in lora_keys:
                    loaded.add(name + ".alpha")
                targets[name] = weight
                break
    return lora_keys - loaded, targets
