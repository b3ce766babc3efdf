"""The one offline loader of Stable Diffusion pipelines (SD 1.x/2.x, SDXL, SSD-1B) and of LoRA files into them.

Used by ``lcm-plugin generate``, the toy world (teacher, harness, demo) and the trainer (teachers, fuse), so a
model path means the same thing everywhere:

- a diffusers pipeline folder (``model_index.json``): ``DiffusionPipeline.from_pretrained(local_files_only=True)``;
  an img2img/inpaint folder is turned into its text-to-image pipeline (same components);
- a single-file ``.safetensors`` checkpoint (original CompVis/SGM layout: ComfyUI, A1111, ``train fuse
  --single-file``): ``from_single_file`` with ``single_file_config``, a local diffusers folder of the same
  architecture, so nothing is downloaded. The file is checked from its header first (pickle, truncated, not a
  full checkpoint), so a damaged file gets one clear line instead of a library traceback.

Pickled checkpoints (``.ckpt``, ``.bin``, ``.pt``) are never loaded. Every failure is a ``ValueError`` or
``FileNotFoundError`` whose message says what to pass instead. diffusers is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from lcm_plugin.adapters.safetensors_io import read_header, sniff_pickle
from lcm_plugin.commands.checks import check_single_file_suffix, summarise_message

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."  # UNet weights of an original-layout single-file checkpoint
SDXL_MARKER = "conditioner.embedders.1."  # SDXL's second (OpenCLIP) text encoder
_TEXT_TO_IMAGE_ONLY = ("Img2Img", "Inpaint")
DIFFUSERS_LORA_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA file name in a folder


def check_single_file(path: str | os.PathLike) -> None:
    """Refuse a truncated, corrupt, pickled or non-checkpoint ``.safetensors`` before diffusers reads it (header only).

    Raises:
        ValueError: the file is damaged or is not an SD single-file checkpoint; the message says what to do.
    """
    p = Path(path)
    try:
        header = read_header(p)
    except ValueError as err:
        with p.open("rb") as fh:
            is_pickle = sniff_pickle(fh.read(8)) is not None  # then the message says how to convert it
        reason = str(err).removesuffix("; download it again")
        again = "" if is_pickle else " Download or export it again."
        raise ValueError(f"single-file checkpoint {p} cannot be read: {reason}.{again}") from err
    if not any(k.startswith(UNET_PREFIX) for k in header.tensors):
        raise ValueError(
            f"{p} has no {UNET_PREFIX}* weights, so it is not a full SD single-file checkpoint (a LoRA or VAE only?). "
            "Pass a full checkpoint or a diffusers pipeline folder."
        )


def is_sdxl_single_file(path: str | os.PathLike) -> bool:
    """True when a single-file checkpoint holds SDXL's second text encoder (header only)."""
    return any(k.startswith(SDXL_MARKER) for k in read_header(path).tensors)


def _folder_hint(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return f"; it holds {files[0].name}: pass that file (with --single-file-config) if it is a single-file checkpoint"
    return ""


def _check_pipeline_folder(folder: Path, what: str) -> None:
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{what} {folder} is not a diffusers pipeline folder (no model_index.json){_folder_hint(folder)}; pass a "
            "folder saved by save_pretrained, or a .safetensors single-file checkpoint."
        )


def _load_error(what: str, err: Exception, advice: str) -> ValueError:
    first = summarise_message(str(err) or type(err).__name__)
    if len(first) > 200:  # keep the library's first sentence, not its advice (e.g. ignore_mismatched_sizes)
        first = first.split(". ", 1)[0]
    if len(first) > 300:
        first = first[:300] + " ..."
    return ValueError(f"{what} could not be loaded ({type(err).__name__}: {first}); {advice}")


def load_pipeline(path: str | os.PathLike, *, single_file_config: str | os.PathLike | None = None,
                  dtype: torch.dtype = torch.float32, keep_safety_checker: bool = False):  # fmt: skip
    """Load a Stable Diffusion text-to-image pipeline offline from a folder or a single-file checkpoint.

    Args:
        path: a diffusers pipeline folder, or an original-layout ``.safetensors`` single-file checkpoint.
        single_file_config: for a single file, a local diffusers pipeline folder of the same architecture (its
            configs and tokenizers are used; its weights are not). Required then: nothing is downloaded.
        dtype: the weights' dtype after loading (the toy teacher ships fp16; the default gives float32).
        keep_safety_checker: keep an SD folder's NSFW checker (diffusers' default; ``generate`` keeps it);
            training and evaluation skip it.

    Returns:
        The pipeline, progress bars disabled.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without ``model_index.json``.
        ValueError: a pickle file, a damaged or foreign checkpoint, a missing or wrong config folder, or a
            pipeline without a UNet and a VAE.
    """
    from diffusers import (
        AutoPipelineForText2Image,
        DiffusionPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    p = Path(path)
    if p.is_dir():
        _check_pipeline_folder(p, "model")
        kw = (
            {}
            if keep_safety_checker or not _is_sd_folder(p)
            else {"safety_checker": None, "requires_safety_checker": False}
        )
        try:
            pipe = DiffusionPipeline.from_pretrained(str(p), dtype=dtype, local_files_only=True, **kw)
        except Exception as err:  # noqa: BLE001 -- diffusers raises OSError/ValueError/KeyError/... for a broken folder
            raise _load_error(
                f"pipeline folder {p}", err, "save it again, or check that no file is missing"
            ) from err
        if any(marker in type(pipe).__name__ for marker in _TEXT_TO_IMAGE_ONLY):
            pipe = AutoPipelineForText2Image.from_pipe(pipe)
    elif p.is_file():
        check_single_file_suffix(p)
        check_single_file(p)
        if single_file_config is None:
            raise ValueError(
                f"{p} is a single-file checkpoint: pass single_file_config (--single-file-config DIR), a local "
                "diffusers pipeline folder of the same architecture (e.g. a copy of stable-diffusion-v1-5 without "
                "weights), so nothing is downloaded."
            )
        config = Path(single_file_config)
        if not config.is_dir():
            raise FileNotFoundError(
                f"single-file config folder {config} does not exist (or is not a folder)."
            )
        _check_pipeline_folder(config, "single-file config")
        cls = StableDiffusionXLPipeline if is_sdxl_single_file(p) else StableDiffusionPipeline
        try:
            pipe = cls.from_single_file(str(p), config=str(config), local_files_only=True, torch_dtype=dtype)
        except Exception as err:  # noqa: BLE001 -- diffusers raises several types for an architecture mismatch
            raise _load_error(
                f"single-file checkpoint {p}", err,
                f"check that {config} is a diffusers folder of the same architecture ({cls.__name__})",
            ) from err  # fmt: skip
    else:
        raise FileNotFoundError(
            f"model {p} does not exist; pass a diffusers pipeline folder or a .safetensors file."
        )
    if not hasattr(pipe, "unet") or not hasattr(pipe, "vae"):
        raise ValueError(f"{p} is not a Stable Diffusion (UNet + VAE) pipeline; got {type(pipe).__name__}.")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _is_sd_folder(p: Path) -> bool:
    import json

    return json.loads((p / "model_index.json").read_text()).get("_class_name") == "StableDiffusionPipeline"


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers logs a failed LoRA load in full (one line per mismatched weight) before raising; mute that."""
    lib = logging.getLogger("diffusers")
    level = lib.level
    lib.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        lib.setLevel(level)


def lora_file(path: str | os.PathLike) -> Path:
    """The ``.safetensors`` LoRA file ``path`` stands for, its header checked (pickles, truncated, foreign files).

    A folder stands for its ``pytorch_lora_weights.safetensors`` (as in diffusers; the trainer's output folder),
    else for its only ``.safetensors`` file.

    Raises:
        FileNotFoundError: no file at ``path`` (or no .safetensors file in the folder).
        ValueError: a folder of several candidates, or a file that is not a readable safetensors LoRA.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if (p / DIFFUSERS_LORA_NAME).is_file():  # what diffusers picks in a folder (the trainer writes it)
            files = [p / DIFFUSERS_LORA_NAME]
        if not files:
            raise FileNotFoundError(f"LoRA folder {p} holds no .safetensors file; pass the LoRA file itself.")
        if len(files) > 1:
            raise ValueError(
                f"LoRA folder {p} holds {len(files)} .safetensors files and no {DIFFUSERS_LORA_NAME}; pass the one "
                "to load."
            )
        p = files[0]
    elif not p.is_file():
        raise FileNotFoundError(f"LoRA {p} does not exist.")
    try:
        read_header(p)
    except ValueError as err:
        raise ValueError(f"LoRA {p} cannot be read: {err}") from err
    return p


def load_lora(pipe, path: str | os.PathLike, *, adapter_name: str | None = None) -> None:
    """``pipe.load_lora_weights`` for the LoRA file ``path`` stands for (see :func:`lora_file`), one-line errors.

    Raises:
        FileNotFoundError: see :func:`lora_file`.
        ValueError: a pickle or damaged file, or a LoRA for another architecture (the message counts the
            mismatched weights instead of listing them).
    """
    p = lora_file(path)
    kw = {} if adapter_name is None else {"adapter_name": adapter_name}
    try:
        with _quiet_diffusers():
            pipe.load_lora_weights(str(p.parent), weight_name=p.name, **kw)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ValueError(
            f"LoRA {p} does not fit this model (made for another base architecture?): {summarise_message(str(err))}. "
            "Use a LoRA trained for this base model (`lcm-plugin adapters inspect` shows what a file is for)."
        ) from err
