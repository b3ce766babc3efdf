"""Precompute the latent / text-embedding cache, so the VAE and text encoders need not run every step."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lcm_plugin.adapters.safetensors_io import save_atomic

logger = logging.getLogger(__name__)


@torch.no_grad()
def build_cache(parts, source, out_path: str | os.PathLike, *, resolution: int, batch_size: int = 8,
                device: str | torch.device = "cpu") -> Path:  # fmt: skip
    """Encode every sample of ``source`` (a data source of :mod:`lora_training.data`) once and save
    ``latent_mean``/``latent_std`` (scaled by the VAE scaling factor), ``prompt_embeds`` (SDXL: ``text_embeds``,
    ``time_ids``) and ``shared.uncond_embeds`` (the embedding of "") to one safetensors file, atomically."""
    from lora_training.data import collate
    from lora_training.teachers import encode_prompts

    samples = source.samples(0, 0) if hasattr(source, "samples") else (source[i] for i in range(len(source)))
    chunks: dict[str, list[torch.Tensor]] = {}
    batch: list[dict] = []

    def flush() -> None:
        b = collate(batch)
        dist = parts.vae.encode(b["pixel_values"].to(device, parts.vae.dtype)).latent_dist
        sf = parts.vae_scaling_factor
        cond = encode_prompts(parts, b["caption"], resolution=resolution, device=device)
        values = {"latent_mean": dist.mean * sf, "latent_std": dist.std * sf, "prompt_embeds": cond["encoder_hidden_states"]}
        if "text_embeds" in cond:
            values.update(text_embeds=cond["text_embeds"], time_ids=cond["time_ids"])
        for k, v in values.items():
            chunks.setdefault(k, []).append(v.float().cpu())
        batch.clear()

    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not chunks:
        raise ValueError("empty dataset: nothing to cache.")
    tensors = {k: torch.cat(v).contiguous() for k, v in chunks.items()}
    if not parts.is_sdxl:
        tensors["shared.uncond_embeds"] = encode_prompts(parts, [""], resolution=resolution, device=device)[
            "encoder_hidden_states"].float().cpu().contiguous()  # fmt: skip
    meta = {"resolution": str(resolution), "num_samples": str(tensors["latent_mean"].shape[0])}
    path = save_atomic(tensors, out_path, meta)
    logger.info("cached %d samples to %s", tensors["latent_mean"].shape[0], path)
    return path
