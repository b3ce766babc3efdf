"""Writing what the trainer produced: a diffusers LoRA (``pipe.load_lora_weights``), a kohya LoRA
(ComfyUI/A1111), a full LCM pipeline folder (LCD), and a fused "full LCM" checkpoint from a LoRA."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

import lcm_plugin
from lora_training.single_file import save_single_file

logger = logging.getLogger(__name__)

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
KOHYA_WEIGHT_NAME = "lcm_lora_kohya.safetensors"


def adapter_metadata(
    *, base_model: str, arch: str, rank: int, alpha: float, steps: int, method: str, extra: dict | None = None
) -> dict[str, str]:
    """The safetensors metadata every file we write carries (strings only)."""
    meta = {
        "lcm_plugin.version": lcm_plugin.__version__,
        "lcm_plugin.base_model": str(base_model),
        "lcm_plugin.architecture": arch,
        "lcm_plugin.rank": str(rank),
        "lcm_plugin.lora_alpha": str(alpha),
        "lcm_plugin.steps": str(steps),
        "lcm_plugin.algorithm": method,
    }
    meta.update({f"lcm_plugin.{k}": str(v) for k, v in (extra or {}).items()})
    return meta


def unet_lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The UNet's LoRA weights with peft names (``<module>.lora_A.weight`` / ``.lora_B.weight``).

    Not passed through ``convert_state_dict_to_diffusers``: in diffusers 0.42 that renames attention LoRA to the
    legacy ``.lora.down``/``.lora.up`` form, which ``load_lora_weights`` then silently skips (measured: 94 of 158
    tensors of a tiny SD UNet loaded). peft names load completely (see tests/training/test_trainer.py).
    """
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def save_diffusers_lora(unet, out_dir: str | os.PathLike, *, is_sdxl: bool, metadata: dict[str, str]) -> Path:
    """Write ``out_dir/pytorch_lora_weights.safetensors`` (loadable by ``pipe.load_lora_weights``) atomically,
    with the peft LoraConfig (rank/alpha) and our metadata in the safetensors header."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from lcm_plugin.adapters.safetensors_io import save_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cls = StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline
    peft_cfg = unet.peft_config["default"]
    lora_meta = {"r": peft_cfg.r, "lora_alpha": peft_cfg.lora_alpha,
                 "target_modules": sorted(peft_cfg.target_modules), "use_dora": False}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=out, prefix=".lora-") as tmp:
        cls.save_lora_weights(tmp, unet_lora_layers=unet_lora_state_dict(unet), weight_name=DIFFUSERS_WEIGHT_NAME,
                              unet_lora_adapter_metadata=lora_meta)  # fmt: skip
        from safetensors import safe_open

        with safe_open(str(Path(tmp) / DIFFUSERS_WEIGHT_NAME), framework="pt") as f:
            header_meta = dict(f.metadata() or {})
        tensors = load_file(str(Path(tmp) / DIFFUSERS_WEIGHT_NAME))
        header_meta.update(metadata)
        return save_atomic(tensors, out / DIFFUSERS_WEIGHT_NAME, header_meta)


def save_kohya_lora(unet, path: str | os.PathLike, *, arch: str, metadata: dict[str, str]) -> Path:
    """Write the UNet's LoRA with kohya keys (``lora_unet_…``, ``lora_down``/``lora_up``, ``alpha``) through the
    adapters package's converter."""
    from peft.utils import get_peft_model_state_dict

    from lcm_plugin.adapters.convert import save_kohya_lora as convert_and_save

    cfg = unet.peft_config["default"]
    state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    return convert_and_save(state, path, arch=arch, lora_alpha=float(cfg.lora_alpha), metadata=metadata)


def _atomic_folder(final: Path, write) -> Path:
    """Call ``write(tmp_dir)`` and move the folder into place only when it completed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_lcm_pipeline(pipe, unet, out_dir: str | os.PathLike, *, metadata: dict[str, str],
                      original_inference_steps: int | None = None) -> Path:  # fmt: skip
    """Save ``pipe`` with ``unet`` and an LCMScheduler (stock diffusers, loads anywhere) as a pipeline folder.

    ``original_inference_steps`` is the N of the grid the model was distilled on; it goes into the scheduler
    config, so diffusers' LCMScheduler and ours sample on that grid (None keeps the default, 50).
    """
    from diffusers import LCMScheduler

    scheduler_kw = (
        {}
        if original_inference_steps is None
        else {"original_inference_steps": int(original_inference_steps)}
    )

    def write(tmp: Path) -> None:
        old_unet, old_sched = pipe.unet, pipe.scheduler
        try:
            pipe.unet, pipe.scheduler = unet, LCMScheduler.from_config(pipe.scheduler.config, **scheduler_kw)
            pipe.register_modules(unet=unet, scheduler=pipe.scheduler)
            pipe.save_pretrained(tmp, safe_serialization=True)
        finally:
            pipe.register_modules(unet=old_unet, scheduler=old_sched)
        (tmp / "lcm_plugin.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))

    return _atomic_folder(Path(out_dir), write)


def fuse_lora(base: str, lora: str, out: str | os.PathLike, *, single_file_config: str | None = None,
              lora_scale: float = 1.0, single_file: bool = False) -> Path:  # fmt: skip
    """The "full LCM" export: base pipeline + LCM-LoRA fused into the UNet weights.

    Args:
        base: the base model, a diffusers pipeline folder or a single-file ``.safetensors`` checkpoint.
        lora: the LCM-LoRA ``.safetensors`` (diffusers or kohya keys), or a folder holding it.
        out: the output pipeline folder (saved with an LCMScheduler), or with ``single_file`` a ``.safetensors`` file
            in the original layout that ComfyUI "Load Checkpoint" and A1111 load (SD 1.x/2.x/SDXL; sample it with
            an LCM sampler, the file carries no scheduler).
        single_file_config: local diffusers config folder of the base's architecture, when ``base`` is a single file.
        lora_scale: the LoRA scale fused into the weights.
        single_file: write ``out`` as one single-file checkpoint instead of a folder.

    Raises:
        FileNotFoundError: no base model or LoRA at the path.
        ValueError: a damaged or foreign file, a LoRA for another architecture (one line, not diffusers' list of
            mismatched weights), or fused weights that are not finite (nothing is written then).
    """
    from lcm_plugin.adapters.inspection import ORIGINAL_INFERENCE_STEPS_KEY, read_original_inference_steps
    from lcm_plugin.pipeline_loading import load_lora, load_pipeline, lora_file

    if single_file and Path(out).suffix != ".safetensors":
        raise ValueError(
            f"--single-file writes one .safetensors file: give an --output ending in .safetensors, not {out}."
        )
    lora_path = lora_file(lora)  # header checked before the base model loads
    pipe = load_pipeline(base, single_file_config=single_file_config)
    load_lora(pipe, lora_path, adapter_name="lcm")
    pipe.fuse_lora(lora_scale=lora_scale)
    pipe.unload_lora_weights()
    _check_finite_weights(pipe.unet, f"fusing {lora_path} at --lora-scale {lora_scale:g}")
    original_inference_steps = read_original_inference_steps(lora_path)  # None: a public LoRA (N = 50)
    meta = {"lcm_plugin.version": lcm_plugin.__version__, "lcm_plugin.base_model": str(base),
            "lcm_plugin.fused_lora": str(lora), "lcm_plugin.lora_scale": str(lora_scale)}  # fmt: skip
    if original_inference_steps is not None:
        meta[ORIGINAL_INFERENCE_STEPS_KEY] = str(original_inference_steps)
    if single_file:
        return save_single_file(pipe, out, {**meta, "lcm_plugin.scheduler": "LCMScheduler"})
    return save_lcm_pipeline(
        pipe, pipe.unet, out, metadata=meta, original_inference_steps=original_inference_steps
    )


def _check_finite_weights(module: torch.nn.Module, what: str) -> None:
    """Refuse to save weights holding NaN/inf: every image of such a model is black (or NaN)."""
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        total = sum(1 for _ in module.parameters())
        raise ValueError(
            f"{what} gives NaN/inf in {len(bad)} of {total} UNet weights (first: {bad[0]}); nothing was written. "
            "Use a smaller --lora-scale, or a LoRA from an earlier checkpoint of its run."
        )
