"""Module-name mapping between the diffusers UNet layout and the LDM ("original"/sgm) layout, and the
underscore-flattened names that kohya-style LoRA files use.

Facts (read from ComfyUI ``comfy/utils.py::unet_to_diffusers``, diffusers
``loaders/lora_conversion_utils.py`` and kohya sd-scripts; the code here is our own):

- With ``layers_per_block = L`` (2 for every SD UNet), diffusers ``down_blocks.x.resnets.i`` is LDM
  ``input_blocks.{1 + (L+1)x + i}.0`` and ``down_blocks.x.attentions.i`` is ``input_blocks.{..}.1``;
  ``down_blocks.x.downsamplers.0.conv`` is ``input_blocks.{(L+1)(x+1)}.0.op``.
- ``up_blocks.x.resnets.i`` / ``.attentions.i`` are ``output_blocks.{(L+1)x + i}.0`` / ``.1``; the
  upsampler ``up_blocks.x.upsamplers.0.conv`` sits after the resnet and, if that up block has attention,
  after the attention: ``output_blocks.{(L+1)x + L}.{2 if attention else 1}.conv``.
- ``mid_block.resnets.{0,1}`` are ``middle_block.{0,2}`` around ``mid_block.attentions.0 = middle_block.1``;
  a UNet without mid attention (SSD-1B) has ``middle_block.{0,1}``.
- Inside resnets: conv1 = in_layers.2, conv2 = out_layers.3, time_emb_proj = emb_layers.1,
  conv_shortcut = skip_connection, norm1 = in_layers.0, norm2 = out_layers.0. Transformer blocks keep their
  names in both layouts. conv_in = input_blocks.0.0, conv_out = out.2, time_embedding.linear_{1,2} =
  time_embed.{0,2}, add_embedding.linear_{1,2} = label_emb.0.{0,2}.
- kohya flattens a module path by replacing "." with "_" and prefixing ``lora_unet_`` / ``lora_te_``
  (``lora_te1_`` / ``lora_te2_`` for SDXL's two text encoders). sd-scripts names SD1.x/2.x UNet modules in
  the diffusers layout and SDXL UNet modules in the LDM layout; ComfyUI and A1111 accept both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LAYERS_PER_BLOCK = 2

# Multi-word path components, longest first, used to undo kohya's "." -> "_" flattening.
_COMPOUNDS = sorted(
    {
        "down_blocks",
        "up_blocks",
        "mid_block",
        "transformer_blocks",
        "to_q",
        "to_k",
        "to_v",
        "to_out",
        "proj_in",
        "proj_out",
        "time_emb_proj",
        "conv_shortcut",
        "conv_in",
        "conv_out",
        "conv_norm_out",
        "time_embedding",
        "add_embedding",
        "class_embedding",
        "linear_1",
        "linear_2",
        "input_blocks",
        "middle_block",
        "output_blocks",
        "in_layers",
        "out_layers",
        "emb_layers",
        "skip_connection",
        "time_embed",
        "label_emb",
        "text_model",
        "self_attn",
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "final_layer_norm",
        "layer_norm1",
        "layer_norm2",
        "text_projection",
        "token_embedding",
        "position_embedding",
    },
    key=lambda s: -s.count("_"),
)
_MAX_PARTS = max(c.count("_") for c in _COMPOUNDS) + 1

_RESNET_TO_LDM = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
    "norm1": "in_layers.0",
    "norm2": "out_layers.0",
}
_RESNET_FROM_LDM = {v: k for k, v in _RESNET_TO_LDM.items()}
_TOP_TO_LDM = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "conv_norm_out": "out.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_TOP_FROM_LDM = {v: k for k, v in _TOP_TO_LDM.items()}
_LDM_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "out.", "time_embed.", "label_emb.")


@dataclass(frozen=True)
class ArchSpec:
    """What the name mapping and the architecture check need to know about one base model family."""

    name: str
    label: str
    context_dim: int
    levels: int
    up_blocks_with_attention: tuple[int, ...]
    mid_attention: bool
    text_encoders: tuple[str, ...]


ARCHS: dict[str, ArchSpec] = {
    "sd15": ArchSpec("sd15", "Stable Diffusion 1.x", 768, 4, (1, 2, 3), True, ("text_encoder",)),
    "sd2": ArchSpec("sd2", "Stable Diffusion 2.x", 1024, 4, (1, 2, 3), True, ("text_encoder",)),
    "sdxl": ArchSpec(
        "sdxl", "Stable Diffusion XL", 2048, 3, (0, 1), True, ("text_encoder", "text_encoder_2")
    ),
    "ssd1b": ArchSpec(
        "ssd1b", "SSD-1B (distilled SDXL)", 2048, 3, (0, 1), False, ("text_encoder", "text_encoder_2")
    ),
}


def unflatten(flat: str) -> str:
    """Turn a kohya-flattened module path back into a dotted path (``attn1_to_out_0`` -> ``attn1.to_out.0``)."""
    parts = flat.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for n in range(min(_MAX_PARTS, len(parts) - i), 1, -1):
            cand = "_".join(parts[i : i + n])
            if cand in _COMPOUNDS:
                out.append(cand)
                i += n
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def flatten(path: str) -> str:
    """kohya flattening of a dotted module path."""
    return path.replace(".", "_")


def is_ldm_path(path: str) -> bool:
    """True if a UNet module path uses LDM names (input_blocks, middle_block, ...)."""
    return path.startswith(_LDM_ROOTS)


def diffusers_to_ldm(path: str, spec: ArchSpec, lpb: int = LAYERS_PER_BLOCK) -> str:
    """Map a diffusers UNet module path (no ``unet.`` prefix) to its LDM path.

    Raises:
        ValueError: the path is not a UNet module that LoRA files target.
    """
    if path in _TOP_TO_LDM:
        return _TOP_TO_LDM[path]
    m = re.fullmatch(
        r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.+))?",
        path,
    )
    if m:
        kind, x, part, i, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5) or ""
        if kind == "down_blocks":
            if part == "downsamplers":
                return f"input_blocks.{(lpb + 1) * (x + 1)}.0.op"
            n = 1 + (lpb + 1) * x + i
        else:
            if part == "upsamplers":
                slot = 2 if x in spec.up_blocks_with_attention else 1
                return f"output_blocks.{(lpb + 1) * x + lpb}.{slot}.{rest}"
            n = (lpb + 1) * x + i
        root = "input_blocks" if kind == "down_blocks" else "output_blocks"
        if part == "resnets":
            return f"{root}.{n}.0.{_resnet_rest_to_ldm(rest, path)}"
        return f"{root}.{n}.1.{rest}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if m:
        part, i, rest = m.group(1), int(m.group(2)), m.group(3)
        if part == "attentions":
            return f"middle_block.1.{rest}"
        j = 2 * i if spec.mid_attention else i
        return f"middle_block.{j}.{_resnet_rest_to_ldm(rest, path)}"
    raise ValueError(f"cannot map UNet module {path!r} to the LDM layout; it is not a known SD UNet module")


def _resnet_rest_to_ldm(rest: str, path: str) -> str:
    if rest not in _RESNET_TO_LDM:
        raise ValueError(f"unknown resnet sub-module in {path!r}")
    return _RESNET_TO_LDM[rest]


def ldm_to_diffusers(path: str, lpb: int = LAYERS_PER_BLOCK, mid_attention: bool | None = None) -> str:
    """Map an LDM UNet module path to the diffusers path.

    ``mid_attention`` says whether ``middle_block.1`` is an attention (SD1/2/XL) or the second resnet (SSD-1B);
    when None it is read from the path itself (resnet sub-module names are distinct from attention ones).
    """
    if path in _TOP_FROM_LDM:
        return _TOP_FROM_LDM[path]
    m = re.fullmatch(r"input_blocks\.(\d+)\.0\.op", path)
    if m:
        n = int(m.group(1))
        return f"down_blocks.{n // (lpb + 1) - 1}.downsamplers.0.conv"
    m = re.fullmatch(r"(input_blocks|output_blocks|middle_block)\.(\d+)\.(?:(\d+)\.)?(.+)", path)
    if not m:
        raise ValueError(f"cannot map LDM module {path!r} to the diffusers layout")
    root, n, slot, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if root == "middle_block":
        rest = path.split(".", 2)[2]
        is_res = _is_resnet_rest(rest)
        if n == 1 and not is_res:
            return f"mid_block.attentions.0.{rest}"
        if mid_attention is None:
            mid_attention = n != 1
        i = n // 2 if mid_attention else n
        return f"mid_block.resnets.{i}.{_resnet_rest_from_ldm(rest, path)}"
    slot_i = int(slot) if slot is not None else -1
    if root == "input_blocks":
        x, i = (n - 1) // (lpb + 1), (n - 1) % (lpb + 1)
        prefix = f"down_blocks.{x}"
    else:
        x, i = n // (lpb + 1), n % (lpb + 1)
        prefix = f"up_blocks.{x}"
        if rest == "conv" and slot_i >= 1:
            return f"{prefix}.upsamplers.0.conv"
    if slot_i == 0:
        return f"{prefix}.resnets.{i}.{_resnet_rest_from_ldm(rest, path)}"
    if slot_i == 1:
        return f"{prefix}.attentions.{i}.{rest}"
    raise ValueError(f"cannot map LDM module {path!r} to the diffusers layout")


def _is_resnet_rest(rest: str) -> bool:
    return rest in _RESNET_FROM_LDM


def _resnet_rest_from_ldm(rest: str, path: str) -> str:
    if rest not in _RESNET_FROM_LDM:
        raise ValueError(f"unknown LDM resnet sub-module in {path!r}")
    return _RESNET_FROM_LDM[rest]
