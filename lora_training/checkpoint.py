"""Resumable training checkpoints: safetensors + JSON only (no pickle), written atomically.

A checkpoint folder ``checkpoint-<step>`` holds the trainable weights, the EMA weights, the optimizer state
(tensors in safetensors, the rest in JSON), the LR-scheduler state, the data position and every RNG state
(the trainer's generator per process and torch's global CPU RNG, which peft dropout uses). It is written into
a hidden temporary folder and renamed into place only when complete, so a kill or a full disk never leaves
a half-written ``checkpoint-<step>``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

import lcm_plugin

logger = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders in ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None when there is none yet) or an explicit folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no state.json); pass 'latest' or a checkpoint-N folder.")
    return path


def _split_tensors(value, name: str, tensors: dict[str, torch.Tensor]):
    """``value`` with every tensor (at any depth of dicts and lists) replaced by ``{"__tensor__": name}``."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, f"{name}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    return value


def _join_tensors(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def flatten_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON-able rest.

    Per-parameter states may nest tensors in dicts (bitsandbytes' 8-bit optimizers wrap their quantisation
    state that way), so tensors are lifted out at any depth and named by their path.
    """
    tensors: dict[str, torch.Tensor] = {}
    per_param = {str(pid): _split_tensors(pstate, str(pid), tensors) for pid, pstate in state["state"].items()}
    return tensors, {"param_groups": state["param_groups"], "state": per_param}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of :func:`flatten_optimizer_state`."""
    if "scalars" in rest:  # checkpoints written before nested states were supported (tensors one level deep)
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
        for pid, values in rest["scalars"].items():
            state.setdefault(int(pid), {}).update(values)
        return {"state": state, "param_groups": rest["param_groups"]}
    state = {int(pid): _join_tensors(pstate, tensors) for pid, pstate in rest["state"].items()}
    return {"state": state, "param_groups": rest["param_groups"]}


def _no_space(err: OSError, where: Path) -> RuntimeError:
    return RuntimeError(
        f"no space left on the device while writing {where}; nothing was half-written (the incomplete checkpoint "
        "was removed). Free disk space, lower checkpoints_total_limit or choose another output_dir, then resume "
        "with --resume latest."
    )


def save_checkpoint(folder: Path, *, trainable: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                    optimizer_state: dict, scheduler_state: dict, state: dict, rng: dict[str, torch.Tensor],
                    total_limit: int | None) -> Path:  # fmt: skip
    """Write one checkpoint atomically (single process; see the trainer for multi-process RNG files)."""
    from safetensors.torch import save_file

    tmp = folder.parent / f".{folder.name}.tmp"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        opt_tensors, opt_rest = flatten_optimizer_state(optimizer_state)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        meta = {"state": state, "optimizer": opt_rest, "lr_scheduler": scheduler_state,
                "lcm_plugin_version": lcm_plugin.__version__}  # fmt: skip
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise _no_space(err, folder) from err
        raise
    if total_limit is not None:
        for old in list_checkpoints(folder.parent)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", folder)
    return folder


def load_checkpoint(folder: Path) -> dict:
    """Everything :func:`save_checkpoint` wrote, as tensors and dicts."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text())
    out = {
        "trainable": load_file(str(folder / "trainable.safetensors")),
        "ema": load_file(str(folder / "ema.safetensors")) if (folder / "ema.safetensors").is_file() else None,
        "optimizer": unflatten_optimizer_state(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]),
        "lr_scheduler": meta["lr_scheduler"],
        "state": meta["state"],
        "rng": load_file(str(folder / "rng.safetensors")),
    }
    return out
