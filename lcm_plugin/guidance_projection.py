"""The guidance-scale projection of full LCM checkpoints, read from the file for hosts that drop it.

A full LCM (LCM paper section 4.1; e.g. LCM-Dreamshaper, or ``lcm-plugin train lcd``) is a UNet with
``time_cond_proj_dim`` set: diffusers' ``TimestepEmbedding`` adds ``cond_proj(w_embedding)`` to the sinusoidal
timestep features before its first linear layer. ComfyUI and A1111/Forge build the UNet without that layer and
drop its weight when they load such a checkpoint; a host adapter reads it back with :func:`read_guidance_projection`
and adds :func:`guidance_condition` to the input of its own time-embedding MLP.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lcm_plugin import core

# Where the projection weight sits: original-layout single files (diffusers' converter keeps the diffusers
# module name under the LDM prefix), the LDM-style name, and a diffusers UNet file.
GUIDANCE_PROJECTION_KEYS = (
    "model.diffusion_model.time_embedding.cond_proj.weight",
    "model.diffusion_model.time_embed.cond_proj.weight",
    "time_embedding.cond_proj.weight",
)


def read_guidance_projection(path: str | os.PathLike) -> torch.Tensor | None:
    """The ``cond_proj`` weight (out_features, time_cond_proj_dim) of a full LCM file, or None if it has none.

    Only that tensor is read (safetensors, memory-mapped); pickled checkpoints are refused.

    Raises:
        ValueError: the file is not a readable ``.safetensors`` file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path.name}: the guidance projection is read from .safetensors files only (never pickled .ckpt/.bin)."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            for key in GUIDANCE_PROJECTION_KEYS:
                if key in keys:
                    return handle.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path.name} cannot be read as safetensors ({err}); download or export it again."
        ) from err
    return None


def guidance_condition(
    projection: torch.Tensor,
    guidance_scale: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``cond_proj(w_embedding)``, shape (1, out_features): what a full LCM adds to its timestep features.

    ``guidance_scale`` is the familiar CFG scale; the embedded value is w = guidance_scale - 1 (LCM paper eq. 8,
    as diffusers' ``LatentConsistencyModelPipeline`` does), embedded with :func:`core.guidance_scale_embedding`.
    """
    if projection.ndim != 2:
        raise ValueError(
            f"a guidance projection is a 2-D linear weight, got shape {tuple(projection.shape)}."
        )
    if not 1.0 <= guidance_scale <= 30.0:
        raise ValueError(
            f"guidance_scale must be in [1, 30] for a full LCM (about 3-13 is typical; 8.5 is the default), "
            f"got {guidance_scale}."
        )
    embedding = core.guidance_scale_embedding(guidance_scale - 1.0, embedding_dim=projection.shape[1])
    # float32, as diffusers runs the projection of a float32 UNet
    return torch.nn.functional.linear(embedding, projection.float()).to(device=device, dtype=dtype)
