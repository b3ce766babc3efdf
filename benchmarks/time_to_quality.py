"""Wall-clock to reach the shipped toy LCM-LoRA's 4-step FD: our trainer (the shipped recipe) vs diffusers' own
``train_lcm_distill_lora_sd_wds.py`` at its defaults, both on the toy teacher, each under a wall-clock cap.

Each run writes checkpoints on the way (every ``--every`` optimizer steps); the clock of a checkpoint is its
folder's modification time minus the run's start (ours: from the start of ``lcm-plugin train cache``, since the
cache is part of our recipe; the script: from its process start, model loading included). ``score`` then rates
every checkpoint with the toy harness (4 LCM steps, CFG 1, one process, judge features) next to the shipped
adapter, so scoring never competes with a training run for the CPU. Run one subcommand at a time:

    python -m benchmarks.time_to_quality prepare --work W                   # 16,000 train images + 16 shards
    python -m benchmarks.time_to_quality ours --work W --cap-min 60
    python -m benchmarks.time_to_quality diffusers --work W --cap-min 60 --script /tmp/lcm_wds.py \\
        --python /tmp/lcm_ref_venv/bin/python                                  # a Python with webdataset
    python -m benchmarks.time_to_quality score --work W --n-samples 512 --split val

Every child runs under ``nice -n 10`` with one torch/OpenMP thread (the dev box is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lcm_plugin.toy import paths  # noqa: E402

TEACHER = paths.TEACHER
SHIPPED = paths.LCM_LORA / "pytorch_lora_weights.safetensors"
N_IMAGES = 16_000  # the shipped adapter's data (lcm_plugin/toy/assets/TRAINING.md)
# The shipped adapter's command (TRAINING.md, "lcm_lora", step 1); only the checkpoint bookkeeping is added.
OURS_RECIPE = ["--resolution", "32", "--train-batch-size", "32", "--max-train-steps", "3000", "--learning-rate", "1e-3",
               "--lr-scheduler", "cosine", "--lr-warmup-steps", "20", "--omega", "4.0", "--num-ddim-timesteps", "20",
               "--solver", "ddim", "--loss-type", "huber", "--target", "student", "--lora-rank", "32",
               "--lora-alpha", "32", "--seed", "1"]  # fmt: skip
# What the script needs to run here at all; everything else stays at its defaults (batch 16, lr 1e-4
# constant, rank 64, l2 loss, N = 50, w ~ U[5, 15], fp32 with bf16 autocast for teacher and target on a CPU).
SCRIPT_REQUIRED = [
    "--resolution",
    "32",
    "--max_train_samples",
    str(N_IMAGES),
    "--dataloader_num_workers",
    "1",
]
SCRIPT_GRID = 50  # the script's --num_ddim_timesteps default


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}  # fmt: skip


def _group_cpu_seconds(pgid: int, seen: dict[int, float]) -> float:
    """CPU seconds (user + system) used so far by the processes of group ``pgid``; ``seen`` keeps the last
    reading of each pid, so processes that ended (the dataloader worker, the cache step) still count."""
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(12) stime(13)
            seen[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return sum(seen.values())


def _run_capped(cmds: list[list[str]], deadline: float, run_dir: Path) -> str:
    """Run ``cmds`` one after another (each niced, in its own process group) until ``deadline``; returns
    "done" or "capped". A capped command's process group is killed (only what this function started). Every
    10 s the CPU time of the running group is appended to ``run_dir/cpu.jsonl`` (cumulative over the commands):
    on a shared machine it is the contention-free measure of the work done (one thread: ~wall-clock on an idle
    core)."""
    done_cpu = 0.0
    with open(run_dir / "log.txt", "a", encoding="utf-8") as out, open(run_dir / "cpu.jsonl", "a") as cpu_log:
        for cmd in cmds:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.Popen(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                    cwd=REPO, start_new_session=True)  # fmt: skip
            seen: dict[int, float] = {}
            while True:
                try:
                    rc = proc.wait(timeout=min(10.0, max(0.1, deadline - time.time())))
                    break
                except subprocess.TimeoutExpired:
                    used = _group_cpu_seconds(proc.pid, seen)
                    cpu_log.write(json.dumps({"t": time.time(), "cpu_s": done_cpu + used}) + "\n")
                    cpu_log.flush()
                    if time.time() >= deadline:
                        os.killpg(proc.pid, signal.SIGTERM)
                        try:
                            proc.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            os.killpg(proc.pid, signal.SIGKILL)
                            proc.wait()
                        return "capped"
            done_cpu += sum(seen.values())
            if rc != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc}; see {run_dir / 'log.txt'}")
    return "done"


def _record(run_dir: Path, name: str, cmds: list[list[str]], cap_min: float, grid: int, ckpt: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    status = _run_capped(cmds, start + cap_min * 60, run_dir)
    info = {"name": name, "start": start, "end": time.time(), "status": status, "cap_min": cap_min, "grid": grid,
            "checkpoint_weights": ckpt, "commands": [" ".join(c) for c in cmds]}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def prepare(work: Path) -> None:
    """The training images (train split, as the shipped adapter's) and the same images as webdataset shards."""
    from benchmarks.diffusers_script import shard_pattern, write_shards
    from lcm_plugin.toy.export import export_split

    if not (work / "world" / "captions.jsonl").is_file():
        export_split(work / "world", "train", N_IMAGES)
    print(shard_pattern(write_shards(work / "world", work / "shards")))


def run_ours(work: Path, cap_min: float, every: int) -> None:
    out = work / "ours"
    lcm = [sys.executable, "-m", "lcm_plugin.cli", "train"]
    cmds = [
        [*lcm, "cache", "--pretrained-model", str(TEACHER), "--train-data-dir", str(work / "world"), "--resolution",
         "32", "--batch-size", "256", "--output", str(out / "cache.safetensors")],
        [*lcm, "lora", "--pretrained-model", str(TEACHER), "--cache-file", str(out / "cache.safetensors"),
         "--output-dir", str(out / "train"), *OURS_RECIPE, "--checkpointing-steps", str(every),
         "--checkpoints-total-limit", "1000"],
    ]  # fmt: skip
    _record(out, "ours", cmds, cap_min, 20, "trainable.safetensors")


def run_diffusers(work: Path, cap_min: float, every: int, script: str, python: str) -> None:
    out = work / "diffusers"
    shards = str(work / "shards" / f"{{000000..{len(list((work / 'shards').glob('*.tar'))) - 1:06d}}}.tar")
    cmd = [python, "-m", "benchmarks.diffusers_script", "--script", script, "--step-log", str(out / "steps.jsonl"),
           "--", "--pretrained_teacher_model", str(TEACHER), "--train_shards_path_or_url", shards,
           "--output_dir", str(out / "train"), *SCRIPT_REQUIRED, "--checkpointing_steps", str(every)]  # fmt: skip
    _record(
        out, "diffusers script", [cmd], cap_min, SCRIPT_GRID, "unet_lora/pytorch_lora_weights.safetensors"
    )


def lora_file(weights: Path, grid: int, dest: Path) -> Path:
    """A diffusers-loadable LoRA (``unet.<module>.lora_A.weight``) from either run's checkpoint weights:
    ours (peft parameter names ``<module>.lora_A.default.weight``) or the script's
    (``unet.base_model.model.<module>.lora_A.weight``), with the distillation grid N in the metadata."""
    from safetensors.torch import load_file, save_file

    out = {}
    for key, value in load_file(str(weights)).items():
        key = (
            key.removeprefix("unet.").removeprefix("base_model.model.").replace(".default.weight", ".weight")
        )
        out[f"unet.{key}"] = value.float().contiguous()
    save_file(out, str(dest), metadata={"format": "pt", "lcm_plugin.original_inference_steps": str(grid)})
    return dest


def _cpu_at(run_dir: Path, t: float) -> float:
    """The run's CPU seconds at time ``t`` (linear between the 10-s samples of cpu.jsonl)."""
    samples = [json.loads(line) for line in (run_dir / "cpu.jsonl").read_text().splitlines() if line]
    before = [x for x in samples if x["t"] <= t] or samples[:1]
    after = [x for x in samples if x["t"] > t] or samples[-1:]
    a, b = before[-1], after[0]
    if b["t"] == a["t"]:
        return a["cpu_s"]
    return a["cpu_s"] + (b["cpu_s"] - a["cpu_s"]) * (t - a["t"]) / (b["t"] - a["t"])


def checkpoints(run_dir: Path) -> list[tuple[int, float, float, Path]]:
    """(step, wall-clock minutes since the run's start, CPU minutes, weights file) of every checkpoint of a
    run, in step order."""
    info = json.loads((run_dir / "run.json").read_text())
    found = []
    for d in (run_dir / "train").glob("checkpoint-*"):
        w = d / info["checkpoint_weights"]
        if w.is_file():
            t = d.stat().st_mtime
            found.append((int(d.name.split("-")[1]), (t - info["start"]) / 60, _cpu_at(run_dir, t) / 60, w))
    return sorted(found)


def score(work: Path, n_samples: int, split: str, seed: int, threads: int) -> None:
    """4-step FD and adherence of the shipped adapter and of every checkpoint, and the first checkpoint of each
    run at or below the shipped adapter's FD."""
    import torch

    from lcm_plugin.toy.evaluate import EvalConfig, evaluate_samplers, lcm_sampler
    from lcm_plugin.toy.judge import load_judge
    from lcm_plugin.toy.models import load_pipeline

    torch.set_num_threads(threads)
    runs = [work / r for r in ("ours", "diffusers") if (work / r / "run.json").is_file()]
    tmp = Path(tempfile.mkdtemp(prefix="ttq-"))
    samplers, meta = (
        [lcm_sampler(str(SHIPPED), steps=(4,), name="shipped")],
        {"shipped": ("shipped", 3000, 0.0, 0.0)},
    )
    for run in runs:
        info = json.loads((run / "run.json").read_text())
        # step 0: the teacher itself with the LCM scheduler on the run's grid (what the LoRA starts from)
        samplers.append(
            lcm_sampler(None, steps=(4,), name=f"{run.name}-0", original_inference_steps=info["grid"])
        )
        meta[f"{run.name}-0"] = (info["name"], 0, 0.0, 0.0)
        for step, minutes, cpu_min, w in checkpoints(run):
            name = f"{run.name}-{step}"
            samplers.append(
                lcm_sampler(
                    str(lora_file(w, info["grid"], tmp / f"{name}.safetensors")), steps=(4,), name=name
                )
            )
            meta[name] = (info["name"], step, minutes, cpu_min)
    rows = evaluate_samplers(
        load_pipeline(TEACHER),
        samplers,
        load_judge(paths.JUDGE),
        EvalConfig(n_samples=n_samples, batch=128, seed=seed, split=split),
    )
    rows = [r for r in rows if r.sampler in meta]
    target = next(r.fd for r in rows if r.sampler == "shipped")
    results = [{"run": meta[r.sampler][0], "step": meta[r.sampler][1], "wall_min": meta[r.sampler][2],
                "cpu_min": meta[r.sampler][3], "fd": r.fd, "adherence": r.adherence["all"]} for r in rows]  # fmt: skip
    print(f"\n4 LCM steps, CFG 1, {n_samples} {split}-split prompts, seeds {seed}..; target = the shipped "
          f"adapter's FD {target:.3f}\n")  # fmt: skip
    print(
        "| run | step | wall-clock min | CPU min | FD | adherence | <= target? |\n|---|---|---|---|---|---|---|"
    )
    for x in results:
        print(f"| {x['run']} | {x['step']} | {x['wall_min']:.1f} | {x['cpu_min']:.1f} | {x['fd']:.3f} | "
              f"{x['adherence']:.3f} | {'yes' if x['fd'] <= target else 'no'} |")  # fmt: skip
    out = work / f"score_{split}_{n_samples}.json"
    out.write_text(
        json.dumps(
            {"target": target, "n_samples": n_samples, "split": split, "seed": seed, "rows": results},
            indent=1,
        )
    )
    for run in runs:
        name = json.loads((run / "run.json").read_text())["name"]
        mine = [x for x in results if x["run"] == name]
        hit = next((x for x in mine if x["fd"] <= target), None)
        if hit:
            print(f"{name}: reached FD {hit['fd']:.3f} <= {target:.3f} at step {hit['step']}, {hit['wall_min']:.1f} "
                  f"min wall-clock, {hit['cpu_min']:.1f} CPU min")  # fmt: skip
        elif mine:
            last = mine[-1]
            print(f"{name}: not reached; last checkpoint step {last['step']} at {last['wall_min']:.1f} min wall-clock "
                  f"({last['cpu_min']:.1f} CPU min), FD {last['fd']:.3f}; best FD {min(x['fd'] for x in mine):.3f}")  # fmt: skip
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("prepare", "ours", "diffusers", "score"))
    ap.add_argument("--work", type=Path, required=True, help="work folder (data, runs, scores)")
    ap.add_argument("--cap-min", type=float, default=60.0, help="wall-clock cap of a run, minutes")
    ap.add_argument("--every", type=int, default=250, help="checkpoint every N optimizer steps")
    ap.add_argument(
        "--script", help="a copy of diffusers' train_lcm_distill_lora_sd_wds.py (see diffusers_script.py)"
    )
    ap.add_argument(
        "--python", default=sys.executable, help="the Python that has the script's deps (webdataset)"
    )
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.what == "prepare":
        prepare(a.work)
    elif a.what == "ours":
        run_ours(a.work, a.cap_min, a.every)
    elif a.what == "diffusers":
        if not a.script:
            ap.error("diffusers needs --script")
        run_diffusers(a.work, a.cap_min, a.every, a.script, a.python)
    else:
        score(a.work, a.n_samples, a.split, a.seed, a.threads)


if __name__ == "__main__":
    main()
