"""A random checkpoint of the full SD 1.5 shape that Forge loads, and the same weights as a diffusers pipeline.

Forge recognises an SD 1.5 file by its UNet (``model_channels`` 320, ``context_dim`` 768, convolutional transformer
projections) and then builds the VAE and CLIP-L text encoder from its own copy of the SD 1.5 configs
(``backend/huggingface/runwayml/stable-diffusion-v1-5``), so those two must have exactly that shape; the UNet
may be smaller (one level here). The tokenizer is Forge's own SD 1.5 tokenizer files, used by both sides.

Weights are rounded to float16 once and the file is written in float16 (about 430 MB); the diffusers pipeline
keeps the same rounded values in float32, so both hosts compute with identical numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch

SD15_CONFIGS = Path("backend/huggingface/runwayml/stable-diffusion-v1-5")  # inside a Forge checkout

# One level of SD 1.5's UNet: the channel and attention sizes Forge's detection needs, a fraction of the weights.
TINY_SD15_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(320,),
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)


def sd15_pipeline(forge_root: Path, *, seed: int = 0, prediction_type: str = "epsilon"):
    """A StableDiffusionPipeline of random weights (float16-rounded, kept in float32) in Forge's SD 1.5 shapes."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

    configs = forge_root / SD15_CONFIGS
    torch.manual_seed(seed)  # diffusers/transformers initialise from the global RNG; tests only
    unet = UNet2DConditionModel(**TINY_SD15_UNET)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(configs / "tokenizer")
    for module in (unet, vae, text_encoder):
        with torch.no_grad():
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
        module.eval()
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=LCMPluginScheduler(prediction_type=prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_checkpoint(pipe, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """The pipeline as one original-layout float16 ``.safetensors`` (lora_training's exporter)."""
    from lora_training.single_file import save_single_file

    return save_single_file(pipe, path, metadata, arch="sd15", dtype=torch.float16)
