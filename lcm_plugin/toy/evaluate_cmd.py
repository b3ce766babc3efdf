"""``lcm-plugin toy evaluate``: the standard table (teacher under DDIM / DPM-Solver++ / Euler, optional LCM rows)."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import time
from pathlib import Path

from lcm_plugin.commands.engine import parse_timesteps
from lcm_plugin.toy import paths

logger = logging.getLogger(__name__)

SAMPLER_NAMES = ("ddim", "dpm++", "euler")


def parse_steps(text: str) -> tuple[int, ...]:
    """ "1,2,4" -> (1, 2, 4); raises ValueError on anything else."""
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"steps must be comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be comma-separated integers >= 1, got {text!r}")
    return steps


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``lcm-plugin toy evaluate``."""
    p.add_argument(
        "--model",
        type=Path,
        default=paths.TEACHER,
        help="diffusers pipeline folder (default: the toy teacher)",
    )
    p.add_argument("--judge", type=Path, default=paths.JUDGE, help="judge weights (.safetensors)")
    p.add_argument(
        "--out-dir", type=Path, default=Path("outputs/toy_eval"), help="where the .md and .png files go"
    )
    p.add_argument(
        "--samplers",
        default="ddim,dpm++,euler",
        help=f"teacher samplers, any of {','.join(SAMPLER_NAMES)}; '' for none",
    )
    p.add_argument("--steps", default="1,2,4,8,25,50", help="teacher step counts")
    p.add_argument(
        "--guidance", type=float, default=4.0, help="teacher CFG scale (4 was best on validation prompts)"
    )
    p.add_argument(
        "--lcm-lora", type=Path, default=None, help="add LCM rows with this LCM-LoRA (folder or .safetensors)"
    )
    p.add_argument(
        "--lcm-full",
        action="store_true",
        help="add LCM rows sampling --model itself: a full LCM (from `train lcd` or `train fuse`), on the grid in "
        "its scheduler config; with a w-embedding, --lcm-guidance is embedded (omega + 1) instead of a CFG pass",
    )
    p.add_argument("--lcm-steps", default="1,2,4,8", help="LCM step counts")
    p.add_argument(
        "--lcm-guidance", type=float, default=1.0, help="LCM CFG scale (1 = no unconditional pass)"
    )
    p.add_argument(
        "--lcm-gamma",
        type=float,
        default=1.0,
        help="TCD-style re-noising strength of the LCM rows in [0, 1] (1 = plain LCM multistep sampling)",
    )
    p.add_argument(
        "--lcm-timesteps",
        default=None,
        help="explicit descending LCM timesteps, e.g. 999,899,749,549: one LCM row at exactly these timesteps "
        "instead of --lcm-steps (off the adapter's distillation grid is allowed, with a warning)",
    )
    p.add_argument(
        "--n-samples", type=int, default=128, help="generated images per row (= real reference size)"
    )
    p.add_argument("--batch", type=int, default=128, help="images per pipeline call")
    p.add_argument("--seed", type=int, default=0, help="sample i starts from generator seed SEED+i")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the pipeline runs (cpu, cuda, cuda:1); noise is drawn on the CPU, the judge runs on the CPU",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="prompts and real images: test (reported tables) or val (choose settings/checkpoints on these)",
    )


def _cpu_name() -> str:
    """CPU model from /proc/cpuinfo where available (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Handler of ``lcm-plugin toy evaluate``: print the table and write Markdown + PNG chart + sample grid."""
    from lcm_plugin.commands.checks import check_input_path, check_min_int, check_writable_output

    check_input_path(args.model, "--model", kind="folder", hint="pass a diffusers pipeline folder")
    check_writable_output(args.out_dir, "folder", flag="--out-dir")  # before minutes of sampling
    check_min_int(args.threads, "--threads")
    import torch

    from lcm_plugin.pipeline_loading import load_pipeline
    from lcm_plugin.toy.evaluate import EvalConfig, lcm_sampler, standard_samplers
    from lcm_plugin.toy.judge import load_judge
    from lcm_plugin.toy.models import checked_device
    from lcm_plugin.toy.report import image_grid, metrics_chart, write_markdown

    torch.set_num_threads(args.threads)
    names = [s.strip().lower() for s in args.samplers.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SAMPLER_NAMES))
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; use any of {','.join(SAMPLER_NAMES)}")
    if args.lcm_full and args.lcm_lora is not None:
        raise ValueError(
            "give either --lcm-lora (an adapter on --model) or --lcm-full (--model is an LCM), not both"
        )
    if not names and args.lcm_lora is None and not args.lcm_full:
        raise ValueError("nothing to evaluate: give --samplers, --lcm-lora or --lcm-full")
    if args.lcm_lora is not None and not args.lcm_lora.exists():
        raise FileNotFoundError(f"LCM-LoRA {args.lcm_lora} not found")
    cfg = EvalConfig(n_samples=args.n_samples, batch=args.batch, seed=args.seed, split=args.split)
    device = checked_device(args.device)  # before any loading
    judge = load_judge(args.judge)
    pipe = load_pipeline(args.model).to(device)
    samplers = [
        s
        for s, key in zip(
            standard_samplers(args.guidance, parse_steps(args.steps)), SAMPLER_NAMES, strict=True
        )
        if key in names
    ]
    if args.lcm_lora is not None or args.lcm_full:
        samplers.append(
            lcm_sampler(
                str(args.lcm_lora) if args.lcm_lora is not None else None,
                parse_steps(args.lcm_steps),
                args.lcm_guidance,
                gamma=args.lcm_gamma,
                timesteps=parse_timesteps(args.lcm_timesteps) if args.lcm_timesteps else None,
                **({"name": "LCM (full model)"} if args.lcm_full else {}),
            )
        )
    from lcm_plugin.toy.evaluate import evaluate_samplers

    t0 = time.perf_counter()
    rows = evaluate_samplers(pipe, samplers, judge, cfg, keep_samples=8, vae_ceiling=True)
    total = time.perf_counter() - t0
    command = (
        f"lcm-plugin toy evaluate --model {args.model} --samplers {args.samplers or ''} --steps {args.steps} "
        f"--guidance {args.guidance:g} --n-samples {args.n_samples} --batch {args.batch} --seed {args.seed} --threads {args.threads} --split {args.split}"
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (
            (f" --lcm-lora {args.lcm_lora}" if args.lcm_lora else " --lcm-full")
            + f" --lcm-steps {args.lcm_steps} --lcm-guidance {args.lcm_guidance:g}"
            + (f" --lcm-gamma {args.lcm_gamma:g}" if args.lcm_gamma != 1.0 else "")
            + (f" --lcm-timesteps {args.lcm_timesteps}" if args.lcm_timesteps else "")
            if args.lcm_lora or args.lcm_full
            else ""
        )
    )
    preamble = (
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {_cpu_name()} x "
        f"{os.cpu_count()} ({platform.machine()}), {args.threads} torch threads, device {args.device}; model: {args.model}; "
        f"{cfg.n_samples} samples per row ({cfg.split}-split prompts, seeds {cfg.seed}..{cfg.seed + cfg.n_samples - 1}); "
        f"total {total / 60:.1f} min.\nCommand: `{command}`\n\n"
    )
    out = args.out_dir
    md = write_markdown(rows, out / "toy_eval.md", preamble)
    chart = metrics_chart(rows, out / "toy_eval_metrics.png")
    from lcm_plugin.toy.judge_train import real_images

    reference = (f"real ({args.split})", real_images(args.split, 8)[0])
    grid = image_grid(
        [reference] + [(f"{r.sampler} {r.steps}", r.samples) for r in rows if r.samples is not None],
        out / "toy_eval_samples.png",
    )
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md}, {chart}, {grid}")
    return 0
