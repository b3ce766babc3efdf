"""Paper-shaped distillation ablations on the toy world (LCM paper tables: guidance omega, skipping step k,
LoRA vs full LCD vs LCF), each setting trained for the same number of steps from the same start, then scored
by the toy-world harness (FD / adherence at 1, 2, 4 LCM steps, 128 test prompts, fixed seeds).

    python benchmarks/distill_ablation.py --cache-file runs/toy_cache.safetensors --out runs/ablation \
        [--teacher lcm_plugin/toy/assets/teacher] [--steps 200] [--only omega,k,method] [--threads 1]

Every run is a plain ``lcm_training`` config (its CLI form is printed in the table); a finished run is
skipped when the script is started again, so it can be stopped and resumed. Writes ``OUT/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE = {  # the ablation's common setting; each table changes one field
    "omega": 4.0,
    "original_inference_steps": 50,  # N; k = 1000 // 50 = 20, the paper's default
    "solver": "ddim",
    "loss_type": "huber",
    "target": "student",
    "lora_rank": 32,
    "lora_alpha": 32.0,
    "learning_rate": 1e-3,
    "lr_warmup_steps": 20,
    "train_batch_size": 32,
    "resolution": 32,
    "seed": 0,
}
EVAL_STEPS = (1, 2, 4)


@dataclass
class Run:
    table: str
    setting: str
    method: str
    changes: dict = field(default_factory=dict)
    init_from: str | None = None  # name of another run whose adapter initialises this one (LCF)
    same_as: str | None = None  # the identical setting was trained under this name: reuse it

    @property
    def name(self) -> str:
        return self.same_as or f"{self.table}_{self.setting}".replace(" ", "").replace("=", "")


def plan(only: set[str]) -> list[Run]:
    runs: list[Run] = []
    if "omega" in only:
        runs += [Run("omega", f"omega={w:g}", "lora", {"omega": float(w)}) for w in (2, 4, 8, 12)]
    if "k" in only:
        runs += [
            Run(
                "k",
                f"k={k}",
                "lora",
                {"original_inference_steps": 1000 // k},
                same_as="omega_omega4" if k == 20 else None,
            )
            for k in (1, 5, 10, 20, 50)
        ]
    if "method" in only:
        runs += [
            Run("method", "LCM-LoRA", "lora", same_as="omega_omega4"),
            Run("method", "full LCD", "lcd", {"learning_rate": 1e-4}),
            Run("method", "LCF from LCM-LoRA", "lcf", {}, init_from="omega_omega4"),
        ]
    return runs


def config_for(run: Run, args, out: Path) -> dict:
    cfg = dict(BASE, **run.changes)
    cfg.update(
        method=run.method,
        pretrained_model=str(args.teacher),
        cache_file=str(args.cache_file),
        output_dir=str(out / run.name),
        max_train_steps=args.steps,
        checkpointing_steps=max(50, args.steps // 2),
        checkpoints_total_limit=1,
    )
    if run.method == "lcd":
        for key in ("lora_rank", "lora_alpha"):
            cfg.pop(key)
    if run.init_from:
        cfg["init_lora"] = str(out / run.init_from / "pytorch_lora_weights.safetensors")
    return cfg


def cli_form(cfg: dict) -> str:
    skip = {"method", "pretrained_model", "cache_file", "output_dir", "checkpoints_total_limit"}
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in cfg.items() if k not in skip)
    return f"lcm-plugin train {cfg['method']} {flags}"


def train(run: Run, cfg: dict) -> tuple[Path, float]:
    """Train unless finished before; the adapter (or full LCM folder) and the measured seconds per step."""
    from lora_training.config import TrainConfig
    from lora_training.trainer import Trainer

    out = Path(cfg["output_dir"])
    product = out / ("lcm_pipeline" if run.method == "lcd" else "pytorch_lora_weights.safetensors")
    timing = out / "ablation_timing.json"
    if product.exists() and timing.exists():
        return product, json.loads(timing.read_text())["seconds_per_step"]
    t0 = time.perf_counter()
    result = Trainer(TrainConfig.from_dict(dict(cfg, resume_from_checkpoint="latest"))).train()
    per_step = (time.perf_counter() - t0) / max(1, len(result.losses))
    timing.write_text(json.dumps({"seconds_per_step": per_step, "steps": result.steps}))
    return product, per_step


def evaluate(run: Run, product: Path, cfg: dict, args, judge, teacher_pipe) -> list:
    from lcm_plugin.toy.evaluate import EvalConfig, evaluate_samplers, lcm_sampler
    from lcm_plugin.toy.models import load_pipeline

    ecfg = EvalConfig(n_samples=args.n_samples, batch=args.n_samples)
    if run.method == "lcd":
        # a full LCM: the w-embedding carries the guidance; the pipeline embeds guidance_scale - 1 = omega
        sampler = lcm_sampler(None, EVAL_STEPS, guidance_scale=cfg["omega"] + 1.0, name=run.setting)
        rows = evaluate_samplers(load_pipeline(str(product)), [sampler], judge, ecfg)
    else:
        sampler = lcm_sampler(str(product), EVAL_STEPS, name=run.setting)
        rows = evaluate_samplers(teacher_pipe, [sampler], judge, ecfg)
    return rows[1:]


def main(argv: list[str] | None = None) -> int:
    import torch

    from lcm_plugin.toy import paths
    from lcm_plugin.toy.judge import load_judge
    from lcm_plugin.toy.models import load_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=paths.TEACHER)
    p.add_argument(
        "--cache-file", type=Path, required=True, help="`lcm-plugin train cache` output for the teacher"
    )
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--steps", type=int, default=200, help="training steps of every run")
    p.add_argument("--only", default="omega,k,method", help="comma list of tables: omega, k, method")
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not args.cache_file.is_file():
        raise SystemExit(f"error: {args.cache_file} does not exist; build it with `lcm-plugin train cache`.")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    judge, teacher_pipe = load_judge(paths.JUDGE), load_pipeline(str(args.teacher))
    lines: dict[str, list[str]] = {}
    for run in plan(set(args.only.split(","))):
        cfg = config_for(run, args, args.out)
        product, per_step = train(run, cfg)
        rows = evaluate(run, product, cfg, args, judge, teacher_pipe)
        fd = " | ".join(f"{r.fd:.2f}" for r in rows)
        adh = " | ".join(f"{r.adherence['all']:.3f}" for r in rows)
        line = f"| {run.setting} | {args.steps} | {fd} | {adh} | {per_step:.2f} | `{cli_form(cfg)}` |"
        lines.setdefault(run.table, []).append(line)
        print(line, flush=True)
        write_report(args, lines)
    return 0


def write_report(args, lines: dict[str, list[str]]) -> None:
    steps = ", ".join(str(s) for s in EVAL_STEPS)
    head = (
        f"| setting | train steps | FD @ {steps} steps | | | adherence @ {steps} steps | | | s/step | command |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    parts = [f"# Distillation ablations ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
             f"Teacher `{args.teacher}`, cache `{args.cache_file}`, {args.n_samples} test prompts, seeds 0..{args.n_samples - 1}.\n"]  # fmt: skip
    for table, rows in lines.items():
        parts += [f"\n## {table}\n", head, *rows]
    tmp = args.out / "ablation.md.tmp"
    tmp.write_text("\n".join(parts) + "\n")
    tmp.replace(args.out / "ablation.md")


if __name__ == "__main__":
    sys.exit(main())
