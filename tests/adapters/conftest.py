"""Tiny synthetic UNets and LoRA adapters for the adapter tests (no downloads).

The UNets keep the real block structure of SD1.5 (4 levels, 2 resnets per level, attention in the first
three), SDXL (3 levels, transformer blocks in level 1-2 and the mid block, add_embedding) and an SSD-1B-like shape (4 transformer
blocks in the deepest level, no mid attention) but use 16-64 channels, so every test runs in seconds.
"""

from __future__ import annotations

import pytest
import torch

from lora_training.config import DEFAULT_LORA_TARGETS

# The LCM-LoRA target list (diffusers consistency-distillation examples), kept once in the trainer config.
LCM_TARGETS = list(DEFAULT_LORA_TARGETS)


def tiny_unet(kind: str, seed: int = 0):
    """A small UNet2DConditionModel with the block structure of ``kind`` (sd15, sd2, sdxl, ssd1b)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    if kind in ("sd15", "sd2"):
        return UNet2DConditionModel(
            sample_size=8,
            layers_per_block=2,
            block_out_channels=(16, 32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768 if kind == "sd15" else 1024,
            norm_num_groups=8,
            attention_head_dim=4,
            use_linear_projection=kind == "sd2",
        )
    xl = dict(
        sample_size=8,
        layers_per_block=2,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        use_linear_projection=True,
        attention_head_dim=(2, 4, 8),
        norm_num_groups=8,
    )
    if kind == "sdxl":
        return UNet2DConditionModel(
            transformer_layers_per_block=(1, 2, 5), **xl
        )  # real SDXL: 10 (kept small)
    if kind == "ssd1b":
        return UNet2DConditionModel(
            transformer_layers_per_block=(1, 2, 4),
            reverse_transformer_layers_per_block=[[4, 4, 4], [2, 1, 1], [1, 1, 1]],
            mid_block_type="UNetMidBlock2D",
            **xl,
        )
    raise ValueError(kind)


def peft_lora(unet, rank: int = 4, alpha: float = 8.0, targets=None, seed: int = 1):
    """Add a non-zero peft LoRA to ``unet`` (in place) and return its peft state dict (no alphas inside)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets or LCM_TARGETS, init_lora_weights=False)
    )
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}


def base_copy(unet_with_lora, kind: str):
    """A fresh UNet of ``kind`` with the same base weights as ``unet_with_lora`` and no adapter."""
    fresh = tiny_unet(kind, seed=99)
    sd = {k.replace(".base_layer", ""): v for k, v in unet_with_lora.state_dict().items() if "lora_" not in k}
    fresh.load_state_dict(sd, strict=True)
    return fresh


@pytest.fixture(scope="session")
def sd15_lora():
    """(unet with peft LoRA r=4 alpha=8, its peft state dict)."""
    unet = tiny_unet("sd15")
    return unet, peft_lora(unet)


@pytest.fixture(scope="session")
def sdxl_lora():
    unet = tiny_unet("sdxl")
    return unet, peft_lora(unet, rank=2, alpha=2.0)


@pytest.fixture(scope="session")
def ssd1b_lora():
    unet = tiny_unet("ssd1b")
    return unet, peft_lora(unet, rank=2, alpha=1.0)
