"""Stable Diffusion teachers (SD 1.x, SD 2.x epsilon/v, SDXL, SSD-1B): their parts and prompt encoding.

A teacher is loaded by the package's one offline loader, :func:`lcm_plugin.pipeline_loading.load_pipeline`
(a local diffusers folder, or a single-file checkpoint with a local config folder, so nothing is downloaded;
re-exported here for the trainer). Everything the training step needs from the host library is collected in
:class:`TeacherParts`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

from lcm_plugin.pipeline_loading import load_pipeline  # noqa: F401 -- re-exported: the trainer's loader

logger = logging.getLogger(__name__)


@dataclass
class TeacherParts:
    """The components of an SD pipeline plus the facts about its noise schedule."""

    pipe: object
    unet: torch.nn.Module
    vae: torch.nn.Module
    alphas_cumprod: torch.Tensor
    prediction_type: str
    num_train_timesteps: int
    is_sdxl: bool
    scheduler_config: dict = field(default_factory=dict)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def guess_arch(unet_config: dict) -> str:
    """The adapters package's architecture key for a UNet config (sd15, sd2, sdxl, ssd1b)."""
    cross = unet_config.get("cross_attention_dim")
    if unet_config.get("addition_embed_type") == "text_time":
        mid = unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        return "ssd1b" if mid is None or "CrossAttn" not in str(mid) else "sdxl"
    return "sd2" if cross == 1024 else "sd15"


def teacher_parts(pipe) -> TeacherParts:
    """Collect the UNet, VAE and the noise schedule facts of a loaded pipeline."""
    from lcm_plugin.core import alphas_cumprod_from_betas, check_prediction_type, make_betas

    sc = dict(pipe.scheduler.config)
    betas = make_betas(
        num_train_timesteps=sc.get("num_train_timesteps", 1000),
        beta_start=sc.get("beta_start", 0.00085),
        beta_end=sc.get("beta_end", 0.012),
        beta_schedule=sc.get("beta_schedule", "scaled_linear"),
        trained_betas=sc.get("trained_betas"),
        rescale_betas_zero_snr=sc.get("rescale_betas_zero_snr", False),
    )
    prediction_type = sc.get("prediction_type", "epsilon")
    check_prediction_type(prediction_type)
    return TeacherParts(
        pipe=pipe,
        unet=pipe.unet,
        vae=pipe.vae,
        alphas_cumprod=alphas_cumprod_from_betas(betas),
        prediction_type=prediction_type,
        num_train_timesteps=int(sc.get("num_train_timesteps", 1000)),
        is_sdxl=hasattr(pipe, "text_encoder_2"),
        scheduler_config=sc,
    )


@torch.no_grad()
def encode_prompts(
    parts: TeacherParts, captions: list[str], *, resolution: int, device: torch.device
) -> dict:
    """Text conditioning for the UNet: ``encoder_hidden_states`` (and SDXL ``added_cond_kwargs``)."""
    if parts.is_sdxl:
        embeds, _, pooled, _ = parts.pipe.encode_prompt(
            prompt=captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        time_ids = torch.tensor(
            [[resolution, resolution, 0, 0, resolution, resolution]], device=device, dtype=embeds.dtype
        )
        return {
            "encoder_hidden_states": embeds,
            "text_embeds": pooled,
            "time_ids": time_ids.repeat(len(captions), 1),
        }
    embeds = parts.pipe.encode_prompt(captions, device, 1, False)[0]
    return {"encoder_hidden_states": embeds}


def sdxl_unconditional(cond: dict) -> dict:
    """SDXL's unconditional branch: zero text embeddings, the same time ids (as its reference script)."""
    return {
        "encoder_hidden_states": torch.zeros_like(cond["encoder_hidden_states"]),
        "text_embeds": torch.zeros_like(cond["text_embeds"]),
        "time_ids": cond["time_ids"],
    }


def unconditional(parts: TeacherParts, cond: dict, *, resolution: int, device: torch.device) -> dict:
    """The unconditional branch of CFG: the embedding of "" (SD), zeros for SDXL (as its reference script)."""
    if parts.is_sdxl:
        return sdxl_unconditional(cond)
    empty = encode_prompts(parts, [""], resolution=resolution, device=device)["encoder_hidden_states"]
    return {"encoder_hidden_states": empty.expand_as(cond["encoder_hidden_states"]).contiguous()}


def unet_call(
    unet, sample: torch.Tensor, timestep: torch.Tensor, cond: dict, timestep_cond=None
) -> torch.Tensor:
    """One UNet forward with SD or SDXL conditioning; returns the raw model output."""
    added = (
        {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]} if "text_embeds" in cond else None
    )
    return unet(
        sample, timestep, encoder_hidden_states=cond["encoder_hidden_states"], timestep_cond=timestep_cond,
        added_cond_kwargs=added, return_dict=False,
    )[0]  # fmt: skip


@contextlib.contextmanager
def adapters_disabled(unet):
    """Run the base model of a peft-adapted diffusers UNet (the teacher of LCM-LoRA), then re-enable adapters."""
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def lcd_student_from_teacher(teacher_unet, time_cond_proj_dim: int):
    """A UNet with a w-embedding input (``time_cond_proj_dim``) initialised from the teacher (paper section 4.2).

    The new ``time_embedding.cond_proj`` linear starts at zero, so the student initially equals the teacher.
    """
    from diffusers import UNet2DConditionModel

    config = dict(teacher_unet.config)
    config["time_cond_proj_dim"] = time_cond_proj_dim
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("time_embedding.cond_proj") for k in missing):
        raise ValueError(
            f"teacher state dict does not fit the LCD student: missing {missing}, unexpected {unexpected}."
        )
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    if student.time_embedding.cond_proj.bias is not None:
        torch.nn.init.zeros_(student.time_embedding.cond_proj.bias)
    return student.to(dtype=teacher_unet.dtype)
