"""Standard diffusers/transformers components of the toy teacher (small Stable Diffusion architecture).

Only stock classes are used -- AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer and the SD
noise schedule (scaled_linear betas 0.00085..0.012, 1000 steps, epsilon prediction) -- so everything that
works on a real SD 1.x checkpoint works on the toy teacher, and vice versa. Pipelines are loaded with the package's
one offline loader, :func:`lcm_plugin.pipeline_loading.load_pipeline` (re-exported here).
"""

from __future__ import annotations

import torch

from lcm_plugin.pipeline_loading import load_pipeline  # noqa: F401 -- re-exported: the toy world's loader

# The SD 1.x noise schedule (as in runwayml/stable-diffusion-v1-5 scheduler_config.json).
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
TEXT_HIDDEN = 64


def build_vae():
    """A 3-level AutoencoderKL: 3x32x32 images <-> 4x8x8 latents (4x downsampling; SD uses 8x)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def build_text_encoder(vocab_size: int, bos_id: int, eos_id: int):
    """A 2-layer CLIPTextModel (hidden 64) with the 77-token context of SD."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def build_unet():
    """A small UNet2DConditionModel on 4x8x8 latents with cross-attention to the text encoder at every level."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def build_scheduler():
    """DDIMScheduler with the SD 1.x training schedule (the pipeline's default sampler)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD_SCHEDULE)


def checked_device(name: str) -> torch.device:
    """``torch.device(name)``, failing before any work on a bad name or a CUDA device this machine lacks."""
    device = torch.device(name)  # torch's own error for a name it does not know
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is visible on this machine; use --device cpu.")
    return device
