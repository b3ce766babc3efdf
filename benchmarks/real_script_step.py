"""Per-step time of the two real programs side by side on the toy teacher: diffusers' own
``train_lcm_distill_lora_sd_wds.py`` (through ``benchmarks/diffusers_script.py``: unmodified, end-of-shard guard)
and our ``lcm-plugin train lora``, at the same batch, resolution, LoRA rank, grid (N = 50), guidance range
(w ~ U[5, 15]), l2 loss and lr (1e-4), both timed by the same hook (one timestamp per
``Accelerator.clip_grad_norm_``, i.e. per optimizer step).

Rows, alternated ``--repeats`` times, each a fresh process under ``nice -n 10`` with one torch thread:
- ``script``: the script as written (teacher and target under ``torch.autocast("cpu")``: bfloat16),
- ``script_no_autocast``: the same with ``torch.autocast`` replaced by a no-op in its process (fp32, our precision;
  a measurement variant, not how the script runs),
- ``ours``: ``lcm-plugin train lora --cache-file`` (the cache is built once beforehand; its time is reported),
- ``ours_images``: ``lcm-plugin train lora --train-data-dir`` (VAE + text encoder every step, no cache).

    python -m benchmarks.real_script_step --script /tmp/lcm_wds.py --python /tmp/lcm_ref_venv/bin/python \\
        --world W --shards 'S/{000000..000015}.tar' --steps 40 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lcm_plugin.toy import paths  # noqa: E402

ROWS = ("script", "script_no_autocast", "ours", "ours_images")
_OURS_CHILD = """
import sys
from benchmarks.diffusers_script import install_step_clock
install_step_clock(sys.argv[1])
sys.argv = ["lcm-plugin", *sys.argv[2:]]
from lcm_plugin.cli import main
sys.exit(main())
"""


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}  # fmt: skip


def command(row: str, a: argparse.Namespace, out: Path, clock: Path, cache: Path) -> list[str]:
    """The command line of one row (see the module docstring)."""
    if row.startswith("script"):
        return [a.python, "-m", "benchmarks.diffusers_script", "--script", a.script, "--step-log", str(clock),
                *(["--no-autocast"] if row == "script_no_autocast" else []), "--",
                "--pretrained_teacher_model", str(paths.TEACHER), "--train_shards_path_or_url", a.shards,
                "--output_dir", str(out), "--resolution", str(a.resolution), "--max_train_samples", str(a.samples),
                "--dataloader_num_workers", "1", "--train_batch_size", str(a.batch), "--lora_rank", str(a.rank),
                "--lora_alpha", str(a.rank), "--max_train_steps", str(a.steps), "--checkpointing_steps", "100000",
                "--validation_steps", "100000"]  # fmt: skip
    data = ["--cache-file", str(cache)] if row == "ours" else ["--train-data-dir", a.world]
    return [sys.executable, "-c", _OURS_CHILD, str(clock), "train", "lora", "--pretrained-model", str(paths.TEACHER),
            *data, "--output-dir", str(out), "--resolution", str(a.resolution), "--train-batch-size", str(a.batch),
            "--lora-rank", str(a.rank), "--lora-alpha", str(a.rank), "--max-train-steps", str(a.steps),
            "--original-inference-steps", "50", "--loss-type", "l2", "--learning-rate", "1e-4", "--lr-warmup-steps", "0",
            "--checkpointing-steps", "100000"]  # fmt: skip


def step_times(clock: Path, skip: int) -> list[float]:
    """Seconds between consecutive optimizer steps, the first ``skip`` steps (warm-up) left out."""
    t = [json.loads(line)["t"] for line in clock.read_text().splitlines() if line]
    return [b - a for a, b in zip(t[skip:], t[skip + 1 :], strict=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", required=True, help="a copy of diffusers' train_lcm_distill_lora_sd_wds.py")
    ap.add_argument("--python", default=sys.executable, help="a Python with the script's deps (webdataset)")
    ap.add_argument("--world", required=True, help="a `lcm-plugin toy make-world` folder")
    ap.add_argument("--shards", required=True, help="the same images as shards (diffusers_script shards)")
    ap.add_argument("--samples", type=int, default=16000, help="images in --world / --shards")
    ap.add_argument("--cache", help="our cache of --world (built here when absent)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="real-step-"))
    cache = Path(a.cache) if a.cache else work / "cache.safetensors"
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    print(f"# real_script_step {time.strftime('%Y-%m-%d %H:%M')} {' '.join(sys.argv[1:])}", flush=True)
    if not cache.is_file() and "ours" in rows:
        t0 = time.time()
        subprocess.run(["nice", "-n", "10", sys.executable, "-m", "lcm_plugin.cli", "train", "cache", "--pretrained-model",
                        str(paths.TEACHER), "--train-data-dir", a.world, "--resolution", str(a.resolution),
                        "--batch-size", "256", "--output", str(cache)], check=True, env=_env(a.threads),
                       capture_output=True, cwd=REPO)  # fmt: skip
        print(f"cache of {a.samples} images built in {time.time() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = {r: [] for r in rows}
    for rep in range(a.repeats):
        for row in rows:
            out, clock = work / f"{row}-{rep}", work / f"{row}-{rep}.jsonl"
            t0 = time.time()
            proc = subprocess.run(["nice", "-n", "10", *command(row, a, out, clock, cache)], env=_env(a.threads),
                                  capture_output=True, text=True, cwd=REPO)  # fmt: skip
            if proc.returncode != 0:
                print(f"{row} FAILED ({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
                continue
            dt = step_times(clock, a.skip)
            times[row] += dt
            print(json.dumps({"row": row, "repeat": rep, "median_s": statistics.median(dt), "min_s": min(dt),
                              "steps_timed": len(dt), "process_s": round(time.time() - t0, 1)}), flush=True)  # fmt: skip
    print(f"\nbatch {a.batch}, {a.resolution} px, rank {a.rank}, {a.threads} thread(s), {a.steps} steps per run "
          f"({a.skip} warm-up left out) x {a.repeats}\n")  # fmt: skip
    print("| row | s/step (median / min) | ours (cache) faster by (median / min) |\n|---|---|---|")
    ours = times.get("ours") or []
    for row, dt in times.items():
        if not dt:
            continue
        x = (
            f"{statistics.median(dt) / statistics.median(ours):.2f} / {min(dt) / min(ours):.2f}"
            if ours
            else "-"
        )
        print(f"| {row} | {statistics.median(dt):.3f} / {min(dt):.3f} | {x} |")


if __name__ == "__main__":
    main()
