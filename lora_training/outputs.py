"""What a run writes besides checkpoints: validation grids and the final adapter / model."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

import torch

from lora_training import export
from lora_training.teachers import guess_arch

logger = logging.getLogger(__name__)


@torch.no_grad()
def sample_images(parts, unet, prompts: list[str], num_steps: list[int], *, guidance_scale: float, seed: int,
                  resolution: int) -> list[list]:  # fmt: skip
    """PIL images [prompt][steps] from the current student with the LCM scheduler (a private pipeline copy)."""
    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

    pipe = parts.pipe
    components = dict(pipe.components)
    components["unet"] = unet
    components["scheduler"] = LCMPluginScheduler.from_config(pipe.scheduler.config)
    vpipe = type(pipe)(**components)
    vpipe.set_progress_bar_config(disable=True)
    was_training = unet.training
    unet.eval()
    rows = []
    try:
        for prompt in prompts:
            row = []
            for n in num_steps:
                gen = torch.Generator().manual_seed(seed)
                row.append(vpipe(prompt, num_inference_steps=n, guidance_scale=guidance_scale, generator=gen,
                                 height=resolution, width=resolution).images[0])  # fmt: skip
            rows.append(row)
    finally:
        unet.train(was_training)
    return rows


def write_validation_grid(trainer, path: Path) -> Path:
    """A grid (rows: prompts, columns: LCM steps) written atomically as PNG."""
    from PIL import Image

    cfg = trainer.cfg
    prompts = cfg.validation_prompts or ["a photo"]
    # LoRA students: CFG 1 (one pass); w-embedding students: the embedding carries w (default 8).
    rows = sample_images(trainer.models.parts, trainer.models.student, prompts, cfg.validation_num_steps,
                         guidance_scale=1.0 if trainer.models.w_embedding_dim is None else 8.0 + 1.0, seed=cfg.seed,
                         resolution=cfg.resolution)  # fmt: skip
    w, h = rows[0][0].size
    grid = Image.new("RGB", (w * len(rows[0]), h * len(rows)))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid.paste(im, (c * w, r * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".grid-", suffix=".png")
    os.close(fd)
    grid.save(tmp)
    os.replace(tmp, path)
    logger.info("validation grid %s", path)
    return path


def export_final(trainer) -> dict[str, Path]:
    """diffusers LoRA + kohya LoRA for LoRA students; an LCM pipeline folder for full students.

    With an EMA target the trainer calls this with the EMA weights swapped in (the EMA is the final model).
    Every file is written atomically; a full disk raises a RuntimeError that says how to finish the export.
    """
    try:
        return _export_final(trainer)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise RuntimeError(
            f"no space left on the device while exporting to {trainer.cfg.output_dir}; no output was half-written and "
            f"checkpoint-{trainer.step} is intact. Free disk space and run the same command with --resume-from-checkpoint "
            "latest: it exports without training further."
        ) from err


def _export_final(trainer) -> dict[str, Path]:
    cfg, models = trainer.cfg, trainer.models
    arch = guess_arch(dict(models.student.config))
    out = Path(cfg.output_dir)
    if models.is_lora:
        peft_cfg = models.student.peft_config["default"]
        meta = export.adapter_metadata(base_model=cfg.pretrained_model, arch=arch, rank=peft_cfg.r,
                                       alpha=peft_cfg.lora_alpha, steps=trainer.step, method=cfg.method,
                                       extra={"original_inference_steps": cfg.original_inference_steps, "solver": cfg.solver,
                                              "recipe": _recipe_json(trainer),
                                              "target": cfg.target, "loss_type": cfg.loss_type,
                                              "omega": cfg.omega if cfg.omega is not None else f"U[{cfg.w_min},{cfg.w_max}]"})  # fmt: skip
        diffusers_file = export.save_diffusers_lora(
            models.student, out, is_sdxl=models.parts.is_sdxl, metadata=meta
        )
        kohya_file = export.save_kohya_lora(
            models.student, out / export.KOHYA_WEIGHT_NAME, arch=arch, metadata=meta
        )
        logger.info("wrote %s and %s", diffusers_file, kohya_file)
        return {"diffusers_lora": diffusers_file, "kohya_lora": kohya_file}
    meta = export.adapter_metadata(base_model=cfg.pretrained_model, arch=arch, rank=0, alpha=0, steps=trainer.step,
                                   method=cfg.method, extra={"time_cond_proj_dim": models.w_embedding_dim,
                                                             "original_inference_steps": cfg.original_inference_steps,
                                                             "recipe": _recipe_json(trainer)})  # fmt: skip
    folder = export.save_lcm_pipeline(
        models.parts.pipe,
        models.student,
        out / "lcm_pipeline",
        metadata=meta,
        original_inference_steps=cfg.original_inference_steps,
    )
    logger.info("wrote %s", folder)
    return {"lcm_pipeline": folder}


def _recipe_json(trainer) -> str:
    """The sampling recipe of what this run trained (``lcm_plugin.recipe``), so every host samples it the same way."""
    from lcm_plugin.adapters.recipes import trained_recipe

    cfg, models = trainer.cfg, trainer.models
    w_range = (cfg.omega, cfg.omega) if cfg.omega is not None else (cfg.w_min, cfg.w_max)
    return trained_recipe(
        original_inference_steps=cfg.original_inference_steps,
        prediction_type=models.parts.prediction_type,
        guidance_embedding=models.w_embedding_dim is not None and not models.is_lora,
        w_range=w_range,
        method=cfg.method,
    ).to_metadata()
