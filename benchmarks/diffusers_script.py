"""Run diffusers' own LCM-LoRA training script, ``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py``,
unmodified, on toy-world webdataset shards, with a step clock.

The script is not part of this repository. Take it from a diffusers checkout or snapshot, e.g.

    git --git-dir <diffusers>/.git show HEAD:examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py > /tmp/lcm_wds.py

(or pass ``--diffusers-git <git dir>`` and this module does that into a temporary file). Its own dependencies:
``pip install webdataset braceexpand tensorboard`` (a venv with ``--system-site-packages`` keeps them out of the
system Python).

Out of the box the script needs three things on current webdataset (checked with webdataset 1.0.2, diffusers
commit 58eb52c0):
- ``--dataloader_num_workers 1`` or more (0 divides by zero in ``SDText2ImageDataset``),
- ``--max_train_samples N`` (the number of samples per epoch; no default),
- a guard for the empty dict ``{}`` that ``webdataset.tariterators.tar_file_expander`` now yields at the end of
  every shard (its ``eof_value``): the script's ``group_by_keys_nothrow`` reads ``filesample["fname"]`` from it
  and dies with ``KeyError: 'fname'``. The exact one-line change to the script would be
  ``if not filesample: continue`` as the first line of the loop ``for filesample in data:`` in
  ``group_by_keys_nothrow``. We do not edit the file: :func:`load_script` wraps the script module's
  ``tar_file_expander`` so that it drops those empty samples (the same effect), before ``main`` runs.

``--no-autocast`` (a measurement variant, not the script's behaviour) makes ``torch.autocast`` a no-op in the
script's process, so its teacher and target passes run in fp32 like ours on a CPU.

Step clock: the script calls ``Accelerator.clip_grad_norm_`` once per optimizer step, as our trainer does; with
``--step-log FILE`` every call appends ``{"t": time.time()}`` to FILE (so both programs are timed by the same hook).

    python -m benchmarks.diffusers_script --script /tmp/lcm_wds.py --step-log steps.jsonl -- \\
        --pretrained_teacher_model lcm_plugin/toy/assets/teacher --train_shards_path_or_url 'W/{000000..000015}.tar' \\
        --output_dir OUT --resolution 32 --max_train_samples 16000 --dataloader_num_workers 1
    python -m benchmarks.diffusers_script shards --world W --out SHARDS   # a make-world folder -> .tar shards
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SCRIPT_PATH = "examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py"


def script_from_git(git_dir: str, commit: str = "HEAD") -> Path:
    """Write ``SCRIPT_PATH`` at ``commit`` of the diffusers git directory ``git_dir`` to a temporary file."""
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{SCRIPT_PATH}"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    fd, path = tempfile.mkstemp(prefix="train_lcm_distill_lora_sd_wds_", suffix=".py")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def _drop_empty(expander):
    """``tar_file_expander`` without the empty end-of-shard samples (see the module docstring)."""

    def expand(*args, **kwargs):
        for sample in expander(*args, **kwargs):
            if sample:
                yield sample

    return expand


def load_script(path: str | os.PathLike):
    """Import the script file as a module (its ``main`` not run) with the end-of-shard guard applied."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; pass --script (a copy of diffusers' {SCRIPT_PATH}) or --diffusers-git."
        )
    spec = importlib.util.spec_from_file_location("train_lcm_distill_lora_sd_wds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "tar_file_expander") or not hasattr(module, "main"):
        raise ValueError(f"{path} is not diffusers' {SCRIPT_PATH} (no tar_file_expander / main).")
    module.tar_file_expander = _drop_empty(module.tar_file_expander)
    return module


def install_step_clock(log_path: str | os.PathLike) -> None:
    """Append ``{"t": time.time()}`` to ``log_path`` at every ``Accelerator.clip_grad_norm_`` (one per step)."""
    from accelerate import Accelerator

    original = Accelerator.clip_grad_norm_
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the process's life)

    def clocked(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        log.write(json.dumps({"t": time.time()}) + "\n")
        log.flush()
        return out

    Accelerator.clip_grad_norm_ = clocked


def write_shards(world: str | os.PathLike, out: str | os.PathLike, per_shard: int = 1000) -> list[Path]:
    """Pack a ``lcm-plugin toy make-world`` folder (PNGs + captions.jsonl) into webdataset shards
    ``000000.tar, ...`` of ``per_shard`` samples (``KEY.png`` + ``KEY.txt``), each written atomically."""
    world, out = Path(world), Path(out)
    rows = [
        json.loads(line)
        for line in (world / "captions.jsonl").read_text(encoding="utf-8").splitlines()
        if line
    ]
    if not rows:
        raise ValueError(f"{world}/captions.jsonl lists no images; run `lcm-plugin toy make-world` first.")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, len(rows), per_shard):
        final = out / f"{s // per_shard:06d}.tar"
        tmp = final.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w") as tar:
            for row in rows[s : s + per_shard]:
                key = Path(row["file_name"]).stem
                for name, data in ((f"{key}.png", (world / row["file_name"]).read_bytes()),
                                   (f"{key}.txt", row["text"].encode("utf-8"))):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, final)
        paths.append(final)
    return paths


def shard_pattern(paths: list[Path]) -> str:
    """The brace pattern the script's ``--train_shards_path_or_url`` takes for ``paths`` (000000..N)."""
    return str(paths[0].parent / f"{{000000..{len(paths) - 1:06d}}}.tar")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "shards":
        ap = argparse.ArgumentParser(prog="diffusers_script shards", description=write_shards.__doc__)
        ap.add_argument("shards")
        ap.add_argument("--world", required=True, help="a `lcm-plugin toy make-world` folder")
        ap.add_argument("--out", required=True)
        ap.add_argument("--per-shard", type=int, default=1000)
        a = ap.parse_args()
        print(shard_pattern(write_shards(a.world, a.out, a.per_shard)))
        return
    argv = sys.argv[1:]
    ours, script_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", help="a copy of the diffusers script")
    ap.add_argument("--diffusers-git", help="a diffusers git directory to take the script from (git show)")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--step-log", help="append one timestamp per optimizer step here")
    ap.add_argument("--no-autocast", action="store_true",
                    help="measurement variant: torch.autocast is a no-op in this process (the script's teacher and "
                         "target passes then run at the run's precision, fp32; not how the script runs)")  # fmt: skip
    a = ap.parse_args(ours)
    if not (a.script or a.diffusers_git):
        ap.error("give --script or --diffusers-git")
    path = Path(a.script) if a.script else script_from_git(a.diffusers_git, a.commit)
    module = load_script(path)
    if a.step_log:
        install_step_clock(a.step_log)
    if a.no_autocast:
        import contextlib

        import torch

        torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()
    sys.argv = [str(path), *script_args]
    module.main(module.parse_args())


if __name__ == "__main__":
    main()
