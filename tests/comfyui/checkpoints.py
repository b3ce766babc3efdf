"""Random single-file checkpoints that ComfyUI detects as real model families, built at test time in seconds.

Every tensor is drawn from a seeded generator (weights ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.02), biases ~
N(0, 0.02)), so a wrong key mapping anywhere changes the UNet output and is caught. Files are fp16 on disk; the
diffusers twins (``TinyCheckpoint.diffusers_unet``) are rebuilt from the file's own tensors, so both sides hold the
same fp16-rounded weights (cast to fp32 for comparisons).

Kinds (``SPECS``):

- ``sd15``: SD1.5-shaped (320 model channels, 768 context, one level with one resnet+transformer layer), random
  CLIP-L, TAESD VAE; ComfyUI: ``SD15`` (epsilon; v-prediction is chosen with ModelSamplingDiscrete on the same file).
- ``sd15_lcm``: the same plus ``time_cond_proj_dim=256`` (a full LCM such as LCM-Dreamshaper). The guidance
  projection is stored as ``model.diffusion_model.time_embedding.cond_proj.weight``: real single files keep the
  diffusers name, because diffusers' convert_diffusers_to_original_stable_diffusion.py passes unmapped UNet keys
  through unchanged (stable-diffusion.cpp lists exactly this key among the tensors it ignores). ComfyUI reports it
  as an unexpected UNet key and drops it; diffusers' ``from_single_file`` has no mapping for it either.
- ``sdxl``: Segmind-Vega-shaped UNet (transformer_depth [0, 0, 1, 1, 2, 2], 2048 context, 2816 ADM, 320 channels at
  all three levels), TAESD VAE, and NO text encoders: ComfyUI's SDXL CLIP is a full CLIP-L + OpenCLIP-bigG built
  from fixed configs (818M parameters, 1.64 GB fp16; see sdxl_full), too heavy for every CI run. ComfyUI loads the
  file with ``clip = None``; tests feed conditioning tensors instead (see ``comfy_process`` harness nodes).
- ``sdxl_full`` (opt-in, not built by default): the same UNet plus ComfyUI's SDXL text encoders (random CLIP-L and
  OpenCLIP-bigG, 818M parameters), so CheckpointLoaderSimple -> CLIPTextEncode works on it. Measured 2026-12-02 on
  this 2-core machine: 1.81 GB file, built in 15 s (peak RSS 3.5 GB); ComfyUI loads it in 3.6 s and each
  CLIPTextEncode takes 3.4 s (fp16 text encoders on CPU), child peak RSS 4.6 GB. Its text encoders have no
  diffusers twin here.

The UNet and CLIP-L are converted to the original layout with ``lora_training.single_file`` (the project's one
diffusers -> original converter); TAESD keys follow ComfyUI's ``comfy.taesd.taesd.TAESD`` (diffusers'
AutoencoderTiny has the same layers; its decoder lacks the leading Clamp module, so indices shift by one).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_training.single_file import (
    TEXT_PREFIXES,
    UNET_PREFIX,
    VAE_PREFIX,
    _rename,  # the converter's module-prefix renamer (no public per-UNet entry point yet)
    open_clip_to_original,
    openai_clip_to_original,
    unet_module_map,
)

BUILDER_VERSION = "1"
LCM_COND_PROJ_KEY = UNET_PREFIX + "time_embedding.cond_proj.weight"
_DIFFUSERS_COND_PROJ = "time_embedding.cond_proj.weight"

_SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [320],
    "down_block_types": ["CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
_VEGA_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 320, 320],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 1, 2],
    "attention_head_dim": 5,
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
# ComfyUI's comfy/sd1_clip_config.json (CLIP ViT-L/14 text tower).
CLIP_L_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# ComfyUI's comfy/clip_config_bigg.json (OpenCLIP ViT-bigG/14 text tower, SDXL's second encoder).
CLIP_G_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


@dataclass(frozen=True)
class CheckpointSpec:
    """What to build: the diffusers UNet config, the text encoders, and what ComfyUI must detect."""

    kind: str
    unet: dict
    comfy_model_class: str  # class name in comfy.supported_models that detection must pick
    comfy_model_base: str  # class name in comfy.model_base of the loaded model
    text_encoder: str | None  # None, "sd15" (CLIP-L) or "sdxl" (CLIP-L + OpenCLIP-bigG)
    seed: int
    expected_unexpected_unet_keys: tuple[str, ...] = field(default=())

    @property
    def file_name(self) -> str:
        return f"lcm_test_{self.kind}.safetensors"


SPECS: dict[str, CheckpointSpec] = {
    "sd15": CheckpointSpec("sd15", _SD15_UNET, "SD15", "BaseModel", "sd15", seed=15),
    "sd15_lcm": CheckpointSpec(
        "sd15_lcm",
        {**_SD15_UNET, "time_cond_proj_dim": 256},
        "SD15",
        "BaseModel",
        "sd15",
        seed=16,
        expected_unexpected_unet_keys=(_DIFFUSERS_COND_PROJ,),
    ),
    "sdxl": CheckpointSpec("sdxl", _VEGA_UNET, "Segmind_Vega", "SDXL", None, seed=17),
    "sdxl_full": CheckpointSpec("sdxl_full", _VEGA_UNET, "Segmind_Vega", "SDXL", "sdxl", seed=17),
}
DEFAULT_KINDS = ("sd15", "sd15_lcm", "sdxl")  # what the harness tests build; sdxl_full is opt-in (size, time)


@dataclass(frozen=True)
class TinyCheckpoint:
    """A built checkpoint file and the way back to its diffusers twins."""

    spec: CheckpointSpec
    path: Path
    build_seconds: float

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        """The file name, as ComfyUI's CheckpointLoaderSimple lists it (``ckpt_name``)."""
        return self.path.name

    def diffusers_unet(self, dtype: torch.dtype = torch.float32):
        """A diffusers UNet2DConditionModel holding exactly the file's UNet tensors (cast to ``dtype``), eval mode."""
        from diffusers import UNet2DConditionModel
        from safetensors import safe_open

        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(self.spec.unet)
        state = {}
        with safe_open(str(self.path), framework="pt") as f:
            for original, diffusers_key in unet_key_map(unet).items():
                state[diffusers_key] = f.get_tensor(original).to(dtype)
        unet.load_state_dict(state, strict=True, assign=True)
        return unet.eval().requires_grad_(False)

    def diffusers_text_encoder(self, dtype: torch.dtype = torch.float32):
        """A transformers CLIPTextModel with the file's CLIP-L tensors, or None for a file without text encoder."""
        if not self.spec.text_encoder:
            return None
        if self.spec.text_encoder != "sd15":
            raise ValueError(
                f"{self.kind}: its SDXL text encoders have no diffusers twin here; feed conditioning tensors "
                "(comfy_process.tensor_conditioning) to compare with diffusers"
            )
        from safetensors import safe_open
        from transformers import CLIPTextConfig, CLIPTextModel

        prefix = TEXT_PREFIXES["sd15"][0]
        with torch.device("meta"):
            model = CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG))
        wanted = set(model.state_dict())
        state = {}
        with safe_open(str(self.path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    name = key[len(prefix) :]
                    name = name if name in wanted else name.removeprefix("text_model.")
                    state[name] = f.get_tensor(key).to(dtype)
        state.update({k: _position_ids() for k in wanted if k.endswith("position_ids")})
        model.load_state_dict(state, strict=True, assign=True)
        _reset_position_ids(model)
        return model.eval().requires_grad_(False)


def unet_key_map(unet) -> dict[str, str]:
    """Original single-file key -> diffusers key for ``unet`` (the converter applied to the key names themselves)."""
    keys = {k: k for k in unet.state_dict() if k != _DIFFUSERS_COND_PROJ}
    mapped = {
        UNET_PREFIX + k: v for k, v in _rename(keys, unet_module_map(dict(unet.config)), "UNet").items()
    }
    if _DIFFUSERS_COND_PROJ in unet.state_dict():
        mapped[LCM_COND_PROJ_KEY] = _DIFFUSERS_COND_PROJ
    return mapped


def build_checkpoint(kind: str, directory: str | Path) -> TinyCheckpoint:
    """Write ``directory/lcm_test_<kind>.safetensors`` (reused when already built by this builder version)."""
    if kind not in SPECS:
        raise ValueError(f"unknown test checkpoint kind {kind!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[kind]
    path = Path(directory) / spec.file_name
    if path.is_file() and _metadata(path).get("lcm_plugin.test_builder") == BUILDER_VERSION:
        return TinyCheckpoint(spec, path, 0.0)
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    from lcm_plugin.adapters.safetensors_io import save_atomic

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(spec.unet)
        taesd = AutoencoderTiny()
    unet = _random_fill(unet, generator)
    unet_state = unet.state_dict()
    state = {original: unet_state[dk] for original, dk in unet_key_map(unet).items()}
    state.update(_taesd_state(_random_fill(taesd, generator)))
    if spec.text_encoder:
        state.update(_clip_l_state(generator, TEXT_PREFIXES[spec.text_encoder][0]))
    if spec.text_encoder == "sdxl":
        state.update(_clip_g_state(generator, TEXT_PREFIXES["sdxl"][1]))
    meta = {
        "lcm_plugin.test_builder": BUILDER_VERSION,
        "lcm_plugin.test_checkpoint": kind,
        "lcm_plugin.diffusers_unet_config": json.dumps(spec.unet),
    }
    save_atomic({k: v.to(torch.float16) for k, v in state.items()}, path, meta)
    return TinyCheckpoint(spec, path, time.perf_counter() - start)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # a damaged cache file is rebuilt
        return {}


def _random_fill(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Materialise a meta-device module on the CPU with seeded random values (order: sorted parameter names)."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=generator)
            elif name.endswith("weight"):  # 1-D weights are norm scales
                p.normal_(1.0, 0.02, generator=generator)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    return module


def _taesd_state(taesd) -> dict[str, torch.Tensor]:
    """ComfyUI TAESD names: encoder.layers.i -> taesd_encoder.i, decoder.layers.i -> taesd_decoder.(i+1)."""
    out = {VAE_PREFIX + "vae_scale": torch.tensor(1.0), VAE_PREFIX + "vae_shift": torch.tensor(0.0)}
    for key, t in taesd.state_dict().items():
        part, _, index, rest = key.split(".", 3)
        name = f"taesd_encoder.{index}" if part == "encoder" else f"taesd_decoder.{int(index) + 1}"
        out[f"{VAE_PREFIX}{name}.{rest}"] = t
    return out


def _clip_l_state(generator: torch.Generator, prefix: str) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG))
    clip = _random_fill(clip, generator)
    _reset_position_ids(clip)
    return {prefix + k: v for k, v in openai_clip_to_original(clip).items() if not k.endswith("position_ids")}


def _clip_g_state(generator: torch.Generator, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP-bigG (ComfyUI's comfy/clip_config_bigg.json), built in fp16 to keep the peak memory down."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device("meta"):
        clip = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G_CONFIG)).to(torch.float16)
    clip = _random_fill(clip, generator)
    _reset_position_ids(clip)
    return {
        prefix + k: v.contiguous()
        for k, v in open_clip_to_original(clip).items()
        if not k.endswith("position_ids")
    }


def _position_ids() -> torch.Tensor:
    return torch.arange(CLIP_L_CONFIG["max_position_embeddings"]).unsqueeze(0)


def _reset_position_ids(model: torch.nn.Module) -> None:
    """CLIP's position_ids buffer is left empty (or on meta) by meta-device construction; give it its arange."""
    for module in model.modules():
        if "position_ids" in module._buffers:
            persistent = "position_ids" not in module._non_persistent_buffers_set
            module.register_buffer("position_ids", _position_ids(), persistent=persistent)
