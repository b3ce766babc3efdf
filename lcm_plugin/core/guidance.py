"""Classifier-free guidance in the LCM formulation and the guidance-scale (w) embedding.

LCM (paper eq. 8-9) writes guided predictions as (1 + w) * cond - w * uncond, so the familiar
("Imagen") guidance scale is w + 1. Full LCM checkpoints are conditioned on w through a sinusoidal
embedding fed to the UNet's ``time_cond_proj_dim`` input.
"""

from __future__ import annotations

import math

import torch

from lcm_plugin.core.noise_schedule import batch_view


def guided(cond: torch.Tensor, uncond: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """(1 + w) * cond - w * uncond, i.e. cond + w * (cond - uncond); ``w`` may be a per-sample tensor."""
    if isinstance(w, torch.Tensor) and w.ndim == 1:
        w = batch_view(w, cond)
    return cond + w * (cond - uncond)


def guidance_scale_embedding(
    w: torch.Tensor | float, embedding_dim: int = 256, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding of the LCM guidance strength w, shape (batch, embedding_dim).

    The value embedded is w * 1000 (the timestep embedding convention of Ho et al. 2020 / VDM); the
    first half of the features are sines and the second half cosines. Pipelines pass w = guidance_scale - 1.
    """
    if embedding_dim < 2:
        raise ValueError(f"embedding_dim must be >= 2, got {embedding_dim}; LCM checkpoints use 256.")
    w = torch.as_tensor(w, dtype=torch.float32).reshape(-1) * 1000.0
    half_dim = embedding_dim // 2
    freqs = torch.exp(torch.arange(half_dim, dtype=dtype) * -(math.log(10000.0) / (half_dim - 1)))
    args = w.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
