"""Diffusers SD pipelines -> the original single-file checkpoint layout that ComfyUI and A1111/Forge load.

The original layout is the one of the CompVis/Stability training code (``ldm``/``sgm`` packages):

- UNet under ``model.diffusion_model.``: ``input_blocks`` (conv_in, then per level ``layers_per_block``
  [resnet, attention] layers and a downsampler), ``middle_block`` (resnet, attention, resnet), ``output_blocks``
  (per level ``layers_per_block + 1`` [resnet, attention, upsampler] layers), ``time_embed``, ``label_emb`` (SDXL)
  and ``out``. Transformer internals keep their diffusers names; resnets use ``in_layers``/``out_layers``.
- VAE under ``first_stage_model.``: ``encoder.down.i.block.j``, ``decoder.up.i.block.j`` (decoder levels counted
  from the lowest resolution), ``mid.block_1/attn_1/block_2`` with 1x1-conv attention projections.
- Text encoders: OpenAI CLIP keeps the transformers names under ``cond_stage_model.transformer.`` (SD 1.x) or
  ``conditioner.embedders.0.transformer.`` (SDXL); OpenCLIP (SD 2.x ``cond_stage_model.model.``, SDXL
  ``conditioner.embedders.1.model.``) has ``resblocks`` with a fused ``in_proj`` and a transposed projection.

SD 2.x: diffusers' text encoder keeps 23 of OpenCLIP-H's 24 blocks (SD 2 conditions on the penultimate one), so the
file has 23 ``resblocks`` and no ``text_projection``; hosts that build the full OpenCLIP-H should report those as
missing but unused (not checked against a host here).

The mapping is derived from the UNet/VAE configs; ``tests/training/test_single_file.py`` checks it against diffusers'
own reader (``from_single_file``), which must give back bit-identical weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

import lcm_plugin
from lcm_plugin.pipeline_loading import UNET_PREFIX
from lcm_plugin.pipeline_loading import check_single_file as check_single_file  # re-exported: one checker
from lora_training.teachers import guess_arch

logger = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("sd15", "sd2", "sdxl")
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = {
    "sd15": ("cond_stage_model.transformer.",),
    "sd2": ("cond_stage_model.model.",),
    "sdxl": ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
}

# diffusers module name -> original module name, inside one block
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}  # fmt: skip
_DOWN_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
_UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")

ModuleMap = dict[str, tuple[str, dict[str, str]]]


def _rename(state: dict[str, torch.Tensor], modules: ModuleMap, what: str) -> dict[str, torch.Tensor]:
    """Rename every key through the longest diffusers module prefix in ``modules``; refuse keys that have none."""
    out, unmapped = {}, []
    for key, tensor in state.items():
        parts = key.split(".")
        for n in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in modules:
                target, inner = modules[prefix]
                rest = ".".join(parts[n:])
                for old, new in inner.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old) :]
                        break
                out[f"{target}.{rest}"] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"the {what} has weights with no place in the original single-file layout: {unmapped[:5]}"
            f"{' ...' if len(unmapped) > 5 else ''}. Save it as a diffusers folder instead (fuse without --single-file)."
        )
    return out


def unet_module_map(config: dict) -> ModuleMap:
    """diffusers UNet2DConditionModel module names -> original ``openaimodel`` names, from the UNet config."""
    lpb = config["layers_per_block"]
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    if not isinstance(lpb, int):
        raise ValueError(
            f"per-level layers_per_block {lpb} has no original single-file layout; only an int is supported."
        )
    if any(t not in _DOWN_TYPES for t in down) or any(t not in _UP_TYPES for t in up):
        raise ValueError(
            f"UNet blocks {down} / {up}: only SD 1.x/2.x/SDXL blocks ({_DOWN_TYPES}, {_UP_TYPES}) are supported."
        )
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(
            f"mid_block_type {config.get('mid_block_type')!r} (e.g. SSD-1B) is not supported; save a diffusers folder."
        )
    m: ModuleMap = {
        "conv_in": ("input_blocks.0.0", {}),
        "time_embedding.linear_1": ("time_embed.0", {}),
        "time_embedding.linear_2": ("time_embed.2", {}),
        "conv_norm_out": ("out.0", {}),
        "conv_out": ("out.2", {}),
    }
    if config.get("time_cond_proj_dim"):  # full LCM: the guidance-scale projection keeps its diffusers name
        m["time_embedding.cond_proj"] = ("time_embedding.cond_proj", {})  # (lcm_plugin.guidance_projection)
    if config.get("addition_embed_type") == "text_time":  # SDXL's pooled-text + size embedding
        m["add_embedding.linear_1"] = ("label_emb.0.0", {})
        m["add_embedding.linear_2"] = ("label_emb.0.2", {})
    # 1. Encoder: input_blocks.0 is conv_in; each level then has lpb layers and, except the last, a downsampler.
    for level, kind in enumerate(down):
        first = 1 + level * (lpb + 1)
        for j in range(lpb):
            m[f"down_blocks.{level}.resnets.{j}"] = (f"input_blocks.{first + j}.0", _UNET_RESNET)
            if kind.startswith("CrossAttn"):
                m[f"down_blocks.{level}.attentions.{j}"] = (f"input_blocks.{first + j}.1", {})
        if level < len(down) - 1:
            m[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{first + lpb}.0.op", {})
    # 2. Middle: resnet, transformer, resnet.
    m["mid_block.resnets.0"] = ("middle_block.0", _UNET_RESNET)
    m["mid_block.attentions.0"] = ("middle_block.1", {})
    m["mid_block.resnets.1"] = ("middle_block.2", _UNET_RESNET)
    # 3. Decoder: lpb + 1 layers per level; the upsampler sits in the level's last layer, after its attention.
    for level, kind in enumerate(up):
        first, attn = level * (lpb + 1), kind.startswith("CrossAttn")
        for j in range(lpb + 1):
            m[f"up_blocks.{level}.resnets.{j}"] = (f"output_blocks.{first + j}.0", _UNET_RESNET)
            if attn:
                m[f"up_blocks.{level}.attentions.{j}"] = (f"output_blocks.{first + j}.1", {})
        if level < len(up) - 1:
            m[f"up_blocks.{level}.upsamplers.0.conv"] = (
                f"output_blocks.{first + lpb}.{2 if attn else 1}.conv",
                {},
            )
    return m


def vae_module_map(config: dict) -> ModuleMap:
    """diffusers AutoencoderKL module names -> original ``ldm`` autoencoder names, from the VAE config."""
    n, lpb = len(config["down_block_types"]), int(config["layers_per_block"])
    m: ModuleMap = {name: (name, {}) for name in ("quant_conv", "post_quant_conv")}
    for part in ("encoder", "decoder"):
        m.update({f"{part}.conv_in": (f"{part}.conv_in", {}), f"{part}.conv_out": (f"{part}.conv_out", {}),
                  f"{part}.conv_norm_out": (f"{part}.norm_out", {}),
                  f"{part}.mid_block.resnets.0": (f"{part}.mid.block_1", _VAE_RESNET),
                  f"{part}.mid_block.resnets.1": (f"{part}.mid.block_2", _VAE_RESNET),
                  f"{part}.mid_block.attentions.0": (f"{part}.mid.attn_1", _VAE_ATTENTION)})  # fmt: skip
    for i in range(n):
        for j in range(lpb):
            m[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", _VAE_RESNET)
        m[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", {})
        # the decoder's up_blocks start at the lowest resolution, the original's ``up`` list at the highest
        for j in range(lpb + 1):
            m[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{n - 1 - i}.block.{j}", _VAE_RESNET)
        m[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{n - 1 - i}.upsample.conv", {})
    return m


def vae_to_original(vae) -> dict[str, torch.Tensor]:
    """The VAE's weights with original names; the mid-block attention projections become 1x1 convolutions."""
    out = _rename(vae.state_dict(), vae_module_map(dict(vae.config)), "VAE")
    for key, t in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and t.ndim == 2:
            out[key] = t[:, :, None, None]
    return out


def _text_model_keys(encoder) -> dict[str, torch.Tensor]:
    """Text-encoder weights named as in transformers' ``text_model.*`` (newer releases drop the prefix)."""
    return {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
            for k, v in encoder.state_dict().items()}  # fmt: skip


def openai_clip_to_original(encoder) -> dict[str, torch.Tensor]:
    """OpenAI CLIP (SD 1.x, SDXL's first encoder): the original files keep the transformers names."""
    state = _text_model_keys(encoder)
    if any(not k.startswith("text_model.") for k in state):
        raise ValueError("an OpenAI-CLIP text encoder with a projection has no original single-file layout.")
    return state


def open_clip_to_original(encoder) -> dict[str, torch.Tensor]:
    """OpenCLIP (SD 2.x, SDXL's second encoder): ``resblocks`` with q/k/v fused into ``in_proj``."""
    state = _text_model_keys(encoder)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}  # fmt: skip
    layer_prefix = "text_model.encoder.layers."
    for key, t in state.items():
        if key in top:
            out[top[key]] = t
        elif key == "text_projection.weight":
            out["text_projection"] = t.T  # OpenCLIP multiplies x @ P, a Linear computes x @ W.T
        elif key.startswith(layer_prefix):
            index, rest = key[len(layer_prefix) :].split(".", 1)
            base = f"transformer.resblocks.{index}"
            module, param = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{base}.attn.in_proj_{param}", {})[module[10]] = t
            elif module in _OPENCLIP_LAYER:
                out[f"{base}.{_OPENCLIP_LAYER[module]}.{param}"] = t
            else:
                raise ValueError(f"text encoder weight {key} has no OpenCLIP single-file name.")
        else:
            raise ValueError(f"text encoder weight {key} has no OpenCLIP single-file name.")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def pipeline_arch(pipe) -> str:
    """sd15, sd2 or sdxl for a loaded pipeline (the adapters package's keys); ValueError for anything else."""
    arch = guess_arch(dict(pipe.unet.config))
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(
            f"{arch} has no single-file export here; supported: {', '.join(SUPPORTED_ARCHS)}. Save a diffusers folder."
        )
    if (arch == "sdxl") != (getattr(pipe, "text_encoder_2", None) is not None):
        raise ValueError(
            f"pipeline {type(pipe).__name__} does not look like {arch} (text encoders do not match the UNet)."
        )
    return arch


def pipeline_to_original(pipe, *, arch: str | None = None) -> dict[str, torch.Tensor]:
    """All weights of an SD 1.x/2.x/SDXL pipeline (UNet, VAE, text encoder(s)) with original single-file names.

    Args:
        pipe: a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline.
        arch: ``sd15``, ``sd2`` or ``sdxl``; default from the UNet config (``cross_attention_dim`` 1024 is sd2).
            Tiny test models need it given, as their sizes do not say which text-encoder layout they stand for.
    """
    arch = arch or pipeline_arch(pipe)
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(
            f"arch {arch!r}: supported single-file architectures are {', '.join(SUPPORTED_ARCHS)}."
        )
    unet = _rename(pipe.unet.state_dict(), unet_module_map(dict(pipe.unet.config)), "UNet")
    state = {UNET_PREFIX + k: v for k, v in unet.items()}
    state.update({VAE_PREFIX + k: v for k, v in vae_to_original(pipe.vae).items()})
    # SD 1.x and SDXL's first encoder are OpenAI CLIP, SD 2.x's only encoder and SDXL's second are OpenCLIP
    first = open_clip_to_original if arch == "sd2" else openai_clip_to_original
    state.update({TEXT_PREFIXES[arch][0] + k: v for k, v in first(pipe.text_encoder).items()})
    if arch == "sdxl":
        state.update(
            {TEXT_PREFIXES[arch][1] + k: v for k, v in open_clip_to_original(pipe.text_encoder_2).items()}
        )
    return state


def save_single_file(pipe, path: str | os.PathLike, metadata: dict[str, str] | None = None, *, arch: str | None = None,
                     dtype: torch.dtype | None = None) -> Path:  # fmt: skip
    """Write ``pipe`` as one original-layout ``.safetensors`` (ComfyUI "Load Checkpoint", A1111 models/Stable-diffusion).

    Written atomically (temp file in the same folder, then ``os.replace``): a failed write leaves no partial file and
    an existing ``path`` untouched. ``dtype`` (e.g. ``torch.float16``) casts floating-point weights; default keeps them.
    Loading it back with diffusers needs a local config folder of the same architecture (``single_file_config``).
    """
    from lcm_plugin.adapters.safetensors_io import save_atomic

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: a single-file checkpoint is written as .safetensors; give a path ending in .safetensors."
        )
    arch = arch or pipeline_arch(pipe)
    state = pipeline_to_original(pipe, arch=arch)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
        for k, v in state.items()
    }
    meta = {"lcm_plugin.version": lcm_plugin.__version__, "lcm_plugin.architecture": arch,
            "lcm_plugin.prediction_type": str(pipe.scheduler.config.get("prediction_type", "epsilon"))}  # fmt: skip
    meta.update(metadata or {})
    logger.info("writing %s (%s, %d tensors)", path, arch, len(state))
    return save_atomic(state, path, meta)
