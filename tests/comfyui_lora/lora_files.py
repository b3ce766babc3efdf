"""LoRA files as users have them (diffusers' own writer, raw peft, kohya) and bad ones, for the loader tests.

The kohya file is written here by hand from the peft tensors (``lora_unet_<diffusers path, dots as
underscores>``, ``lora_down = lora_A``, ``lora_up = lora_B``, ``alpha``), independently of
``lcm_plugin.adapters.convert``, so that a converted peft file can be compared against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from tests.adapters.conftest import LCM_TARGETS

# A one-level SD1.5-shaped UNet (320 channels, 768 context): ComfyUI detects its LDM weights as SD15.
ONE_LEVEL_UNET = dict(
    sample_size=8,
    layers_per_block=2,
    block_out_channels=(320,),
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
# ComfyUI's unet_config keys for the same UNet (what comfy_reference.comfy_key_map needs).
ONE_LEVEL_COMFY_CONFIG = {
    "num_res_blocks": [2],
    "channel_mult": [1],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1],
    "transformer_depth_middle": 1,
}
RANK, ALPHA = 4, 8.0


def one_level_peft_lora(seed: int = 1) -> tuple[dict[str, torch.Tensor], dict]:
    """(peft state dict of a non-zero rank-4, alpha-8 LCM-target LoRA on the one-level UNet, its LoraConfig dict)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**ONE_LEVEL_UNET)
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=LCM_TARGETS, init_lora_weights=False)
    )
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    return sd, unet.peft_config["default"].to_dict()


def save_diffusers_lora(peft_sd: dict[str, torch.Tensor], config: dict, path: Path) -> Path:
    """The file diffusers' ``save_lora_weights`` writes (``unet.<path>.lora_A.weight``, alphas in metadata)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}-dir"
    StableDiffusionPipeline.save_lora_weights(
        tmp,
        unet_lora_layers=convert_state_dict_to_diffusers(peft_sd),
        unet_lora_adapter_metadata={k: v for k, v in config.items() if k != "runtime_config"},
    )
    (tmp / "pytorch_lora_weights.safetensors").replace(path)
    tmp.rmdir()
    return path


def save_raw_peft_lora(peft_sd: dict[str, torch.Tensor], path: Path) -> Path:
    """A raw peft state dict (``base_model.model.<path>.lora_A.weight``), no alphas anywhere (scale 1)."""
    save_file({f"base_model.model.{k}": v for k, v in peft_sd.items()}, path)
    return path


def kohya_tensors(
    peft_sd: dict[str, torch.Tensor], alpha: float | None, prefix: str = "lora_unet_"
) -> dict[str, torch.Tensor]:
    """kohya names for a peft LoRA, written by hand (SD1.x kohya uses diffusers module paths; ``lora_te_`` for
    a CLIP text encoder's ``text_model.…`` paths)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_sd.items():
        module, kind = key.rsplit(".lora_", 1)
        name = prefix + module.replace(".", "_")
        out[f"{name}.lora_down.weight" if kind.startswith("A") else f"{name}.lora_up.weight"] = value
        if alpha is not None:
            out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def save_kohya_lora(peft_sd: dict[str, torch.Tensor], path: Path, alpha: float | None = ALPHA) -> Path:
    save_file(kohya_tensors(peft_sd, alpha), path, metadata={"ss_network_dim": str(RANK)})
    return path


def expected_deltas(peft_sd: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """diffusers module path -> ``scale * B @ A`` (reshaped to the weight for convolutions): the LoRA update."""
    out = {}
    for key in peft_sd:
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        down, up = peft_sd[key].float(), peft_sd[key.replace(".lora_A.", ".lora_B.")].float()
        delta = up.flatten(1) @ down.flatten(1)
        out[module] = scale * delta.reshape(up.shape[0], *down.shape[1:])
    return out


def sdxl_kohya_bytes(seed: int = 0) -> bytes:
    """A small kohya LoRA with SDXL's 2048-wide cross-attention (a LoRA for another architecture)."""
    g = torch.Generator().manual_seed(seed)
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    t = {
        f"{name}.lora_down.weight": torch.randn(4, 2048, generator=g),
        f"{name}.lora_up.weight": torch.randn(640, 4, generator=g),
        f"{name}.alpha": torch.tensor(4.0),
    }
    return st_save(t)


def two_level_kohya_bytes(seed: int = 0) -> bytes:
    """An SD1.x kohya LoRA that also targets ``down_blocks.1`` (the one-level model has no such block)."""
    g = torch.Generator().manual_seed(seed)
    t = {}
    for block, width in ((0, 320), (1, 640)):
        name = f"lora_unet_down_blocks_{block}_attentions_0_transformer_blocks_0_attn2_to_k"
        t[f"{name}.lora_down.weight"] = torch.randn(4, 768, generator=g)
        t[f"{name}.lora_up.weight"] = torch.randn(width, 4, generator=g)
        t[f"{name}.alpha"] = torch.tensor(4.0)
    return st_save(t)


def pickle_bytes(tmp: Path) -> bytes:
    """What ``torch.save`` writes (a zip with a pickle inside): never to be loaded."""
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1)}, tmp)
    return tmp.read_bytes()


def registry_file(path: Path, entries: list[dict]) -> Path:
    """A ``LCM_PLUGIN_ADAPTERS_FILE`` JSON list."""
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_level_ldm_shapes() -> dict[str, tuple[int, ...]]:
    """Weight shapes of the one-level UNet under ComfyUI's LDM names (``diffusion_model.<ldm>.weight``)."""
    from diffusers import UNet2DConditionModel

    from tests.adapters.comfy_reference import diffusers_to_ldm_map

    sd = UNet2DConditionModel(**ONE_LEVEL_UNET).state_dict()
    return {
        f"diffusion_model.{ldm}.weight": tuple(sd[f"{dif}.weight"].shape)
        for dif, ldm in diffusers_to_ldm_map(ONE_LEVEL_COMFY_CONFIG).items()
        if f"{dif}.weight" in sd
    }
