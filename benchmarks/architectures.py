"""UNet configurations of the real checkpoints, for cost benchmarks with random weights.

Compute and memory do not depend on weight values, so a randomly initialised UNet of the same
architecture measures what a real checkpoint costs. Values are those of the checkpoints' unet/config.json.
"""

from __future__ import annotations

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)


def build_unet(name: str, dtype=None, device: str = "cpu"):
    """A randomly initialised UNet2DConditionModel of the named architecture ('sd15' or 'sdxl')."""
    from diffusers import UNet2DConditionModel

    config = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}[name]
    unet = UNet2DConditionModel(**config).eval().to(device)
    if dtype is not None:
        unet = unet.to(dtype)
    return unet


def unet_inputs(name: str, batch: int, latent_size: int, dtype, device: str = "cpu"):
    """Random (encoder_hidden_states, added_cond_kwargs) for one UNet call of the named architecture."""
    import torch

    if name == "sd15":
        return torch.randn(batch, 77, 768, dtype=dtype, device=device), None
    added = {
        "text_embeds": torch.randn(batch, 1280, dtype=dtype, device=device),
        "time_ids": torch.tensor([[latent_size * 8, latent_size * 8, 0, 0, latent_size * 8, latent_size * 8]], dtype=dtype, device=device).repeat(batch, 1),
    }
    return torch.randn(batch, 77, 2048, dtype=dtype, device=device), added
