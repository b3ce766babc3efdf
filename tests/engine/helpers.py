"""Shared fixtures-as-functions for the engine tests: tiny real-architecture models and reference imports."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch


def tiny_unet(prediction_channels: int = 4, time_cond_proj_dim: int | None = None, seed: int = 0):
    """A randomly initialised UNet2DConditionModel with SD's block types, small enough for CPU tests."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)  # diffusers initialises weights from the global RNG; tests only
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=prediction_channels,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def import_k_diffusion():
    """Import PyPI k-diffusion's sampling/external modules without its heavy package __init__.

    k-diffusion 0.1.1.post1's __init__ imports training code (clip, torchvision, kornia, wandb...). Only
    sampling.py and external.py are the host contract A1111 pins; their one unused heavy import is
    ``torchvision.transforms.functional`` in utils.py (image conversion helpers), stubbed here.
    """
    if "k_diffusion.external" in sys.modules:
        return sys.modules["k_diffusion.sampling"], sys.modules["k_diffusion.external"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        pytest.skip("k-diffusion is not installed (scripts/install.sh installs it)")
    stub_names = []
    if importlib.util.find_spec("torchvision") is None:
        # Only for the duration of the import: diffusers/transformers probe for torchvision and must not see it.
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
        stubs = {
            "torchvision": tv,
            "torchvision.transforms": tv.transforms,
            "torchvision.transforms.functional": tv.transforms.functional,
        }
        sys.modules.update(stubs)
        stub_names = list(stubs)
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["k_diffusion"] = pkg
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module(
            "k_diffusion.external"
        )
    finally:
        for name in stub_names:
            sys.modules.pop(name, None)


def tiny_tokenizer(directory):
    """A real CLIPTokenizer whose vocabulary is every byte-level character (no merges), written to ``directory``."""
    import json

    from transformers import CLIPTokenizer

    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points >= 256.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {
        tok: i
        for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])
    }
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)


def tiny_text_encoder(hidden_size: int = 32, with_projection: bool = False, seed: int = 0):
    """A randomly initialised CLIP text encoder matching :func:`tiny_tokenizer` (514 tokens)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=hidden_size,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def tiny_vae(seed: int = 0):
    """A randomly initialised AutoencoderKL with a downsampling factor of 2."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    ).eval()


def tiny_sd_pipeline(tmp_path, scheduler, *, unet=None, cls_name: str = "StableDiffusionPipeline"):
    """A StableDiffusion(-Img2Img/-LatentConsistency) pipeline of tiny random components."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    parts = dict(
        unet=unet if unet is not None else tiny_unet(),
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        tokenizer=tiny_tokenizer(tmp_path),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
    )
    if cls_name != "LatentConsistencyModelPipeline":
        parts["requires_safety_checker"] = False
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(tmp_path, scheduler):
    """A StableDiffusionXLPipeline of tiny random components (two text encoders, text_time added conditioning)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=8,
    ).eval()
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir(exist_ok=True)
    tokenizer = tiny_tokenizer(tok_dir)
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        text_encoder_2=tiny_text_encoder(with_projection=True, seed=1),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TimestepRecorder:
    """Wraps a UNet forward so a test can see exactly which timesteps a pipeline evaluated."""

    def __init__(self, unet):
        self.timesteps: list[int] = []
        self._forward = unet.forward
        unet.forward = self

    def __call__(self, sample, timestep, *args, **kwargs):
        self.timesteps.append(int(torch.as_tensor(timestep).reshape(-1)[0]))
        return self._forward(sample, timestep, *args, **kwargs)
