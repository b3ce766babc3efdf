"""Tiny real-architecture SD components for the trainer tests (seconds to build, CPU only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

RES = 16  # pixels; the 2-level VAE makes 8x8 latents


def tiny_unet(time_cond_proj_dim: int | None = None, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)  # diffusers initialises weights from the global RNG; tests only
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, time_cond_proj_dim=time_cond_proj_dim,
    )


def tiny_pipeline(prediction_type: str = "epsilon", seed: int = 0, time_cond_proj_dim: int | None = None):
    """A StableDiffusionPipeline with random tiny UNet/VAE/CLIP and a real BPE tokenizer."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(build_tokenizer_files(tmp))
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=RES)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=tiny_unet(time_cond_proj_dim, seed=seed), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_tiny_pipeline(path: str | os.PathLike, **kw) -> Path:
    pipe = tiny_pipeline(**kw)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return Path(path)


COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "white": (240, 240, 240)}


def write_image_folder(path: str | os.PathLike, n: int = 8, size: int = RES) -> Path:
    """n solid-colour images with captions ``a red square`` etc."""
    from PIL import Image

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i in range(n):
        colour = names[i % len(names)]
        im = Image.new("RGB", (size, size), COLOURS[colour])
        im.paste((0, 0, 0), (size // 4, size // 4, size // 2, size // 2))
        im.save(out / f"img{i:03d}.png")
        (out / f"img{i:03d}.txt").write_text(f"a {colour} square")
    return out


def base_config(tmp_path: Path, pipe_dir: Path, data_dir: Path, **overrides):
    from lora_training.config import TrainConfig

    values = dict(pretrained_model=str(pipe_dir), train_data_dir=str(data_dir), output_dir=str(tmp_path / "out"),
                  resolution=RES, train_batch_size=2, max_train_steps=3, learning_rate=1e-3, lr_warmup_steps=0,
                  lora_rank=4, lora_alpha=4.0, checkpointing_steps=1000, log_every=1, seed=0)
    values.update(overrides)
    return TrainConfig(**values)
