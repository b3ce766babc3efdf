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
        stubs = {"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.transforms.functional": tv.transforms.functional}
        sys.modules.update(stubs)
        stub_names = list(stubs)
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["k_diffusion"] = pkg
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    finally:
        for name in stub_names:
            sys.modules.pop(name, None)
