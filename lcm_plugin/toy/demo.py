"""``lcm-plugin demo``: a grid of images from the toy teacher (25 steps + CFG) and, when the toy LCM-LoRA is
shipped, LCM at 1, 2 and 4 steps -- with timings and quality figures, offline, in a few minutes on a CPU.

``--model PATH`` runs the same on any diffusers Stable Diffusion folder (quality figures need the toy world).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lcm_plugin.toy import paths, world

logger = logging.getLogger(__name__)

GRID_SEEDS = 2

# Ground-truth scenes of the default prompts (one uses a held-out colour/shape combination).
DEMO_PROMPTS: tuple[tuple[str, world.Scene], ...] = (
    (
        "a large red circle in the center on a black background",
        world.Scene(1, "black", "circle", "red", size="large", position="center"),
    ),
    (
        "a small blue triangle on the left on a white background",
        world.Scene(1, "white", "triangle", "blue", size="small", position="left"),
    ),
    (
        "a large yellow square on the right on a gray background",
        world.Scene(1, "gray", "square", "yellow", size="large", position="right"),
    ),
    (
        "a red square left of a yellow circle on a black background",
        world.Scene(2, "black", "square", "red", axis="horizontal", shape2="circle", colour2="yellow"),
    ),
    (
        "a blue cross above a green triangle on a white background",
        world.Scene(2, "white", "cross", "blue", axis="vertical", shape2="triangle", colour2="green"),
    ),
    (
        "a large purple triangle at the bottom on a gray background",
        world.Scene(1, "gray", "triangle", "purple", size="large", position="bottom"),
    ),
)


def add_demo_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``lcm-plugin demo``."""
    p.add_argument(
        "--model",
        type=Path,
        default=paths.TEACHER,
        help="diffusers pipeline folder (default: the toy teacher)",
    )
    p.add_argument(
        "--lora", type=Path, default=paths.LCM_LORA, help="LCM-LoRA folder or file (rows skipped if absent)"
    )
    p.add_argument("--judge", type=Path, default=paths.JUDGE, help="judge weights for the quality figures")
    p.add_argument(
        "--prompt", action="append", default=None, help="prompt (repeatable); default: six toy prompts"
    )
    p.add_argument("--seeds", type=int, default=4, help="images per prompt and row")
    p.add_argument("--teacher-steps", type=int, default=25, help="teacher steps (DDIM)")
    p.add_argument(
        "--guidance", type=float, default=4.0, help="teacher CFG scale (4 was best on validation prompts)"
    )
    p.add_argument("--lcm-steps", default="1,2,4", help="LCM step counts")
    p.add_argument("--lcm-guidance", type=float, default=1.0, help="LCM CFG scale")
    p.add_argument("--out", type=Path, default=Path("outputs/demo.png"), help="PNG to write")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def _lora_file(path: Path) -> Path | None:
    """The LoRA file ``path`` stands for (:func:`lcm_plugin.pipeline_loading.lora_file`), or None when there is
    none (the LCM rows are then skipped)."""
    from lcm_plugin.pipeline_loading import lora_file

    try:
        return lora_file(path)
    except FileNotFoundError:
        return None


def run_demo(args: argparse.Namespace) -> dict:
    """Generate every row, write the PNG grid and return {"rows": [...], "out": path, "seconds": total}."""
    from lcm_plugin.commands.checks import check_input_path, check_min_int, check_writable_output
    from lcm_plugin.toy.evaluate_cmd import parse_steps

    # every input before the heavy imports and the model load
    check_input_path(args.model, "--model", kind="folder", hint="pass a diffusers pipeline folder")
    check_writable_output(args.out, "file", flag="--out", suffixes=(".png",))
    for flag, value in (
        ("--seeds", args.seeds),
        ("--teacher-steps", args.teacher_steps),
        ("--threads", args.threads),
    ):
        check_min_int(value, flag)
    lcm_steps = parse_steps(args.lcm_steps)
    lora = _lora_file(args.lora)  # its header checked before the model loads
    import torch

    from lcm_plugin.adapters.inspection import read_original_inference_steps
    from lcm_plugin.pipeline_loading import load_lora, load_pipeline
    from lcm_plugin.toy.evaluate import generate, lcm_scheduler_factory, unet_evals_per_step
    from lcm_plugin.toy.report import image_grid

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    pipe = load_pipeline(args.model)
    load_s = time.perf_counter() - t_start
    custom = args.prompt is not None
    prompts = list(args.prompt) if custom else [p for p, _ in DEMO_PROMPTS]
    scenes = None if custom else [s for _, s in DEMO_PROMPTS]
    all_prompts = [p for p in prompts for _ in range(args.seeds)]
    judge = None
    if scenes is not None and args.judge.is_file():
        from lcm_plugin.toy.judge import load_judge

        judge = load_judge(args.judge)

    plans = [
        (
            f"teacher DDIM {args.teacher_steps} steps, CFG {args.guidance:g}",
            None,
            args.teacher_steps,
            args.guidance,
        )
    ]
    if lora is None:
        print(
            f"LCM rows skipped: no LCM-LoRA at {args.lora} (distil one with the trainer, then pass --lora PATH)"
        )
    else:
        for n in lcm_steps:
            plans.append(
                (
                    f"LCM-LoRA {n} step{'s' if n > 1 else ''}, CFG {args.lcm_guidance:g}",
                    "lcm",
                    n,
                    args.lcm_guidance,
                )
            )

    rows, grid_rows, original = [], [], pipe.scheduler
    # sample on the grid the adapter was distilled on (None: the scheduler's default, 50)
    original_inference_steps = None if lora is None else read_original_inference_steps(lora)
    for label, kind, steps, guidance in plans:
        if kind == "lcm" and not getattr(pipe, "_demo_lora_loaded", False):
            load_lora(pipe, lora, adapter_name="lcm")
            pipe._demo_lora_loaded = True
        pipe.scheduler = (
            lcm_scheduler_factory(original_inference_steps)(original.config) if kind == "lcm" else original
        )
        t0 = time.perf_counter()
        images = generate(pipe, all_prompts, steps, guidance, seed=0, batch=len(all_prompts))
        seconds = time.perf_counter() - t0
        evals = steps * unet_evals_per_step(pipe, guidance)
        row = {
            "label": label,
            "steps": steps,
            "guidance": guidance,
            "unet_evals": evals,
            "seconds": seconds,
            "adherence": None,
        }
        if judge is not None and images.shape[-1] == 32:
            from lcm_plugin.toy.judge import adherence

            row["adherence"] = adherence(judge, images, [s for s in scenes for _ in range(args.seeds)])
        rows.append(row)
        # Grid: one row per (method, seed) for the first GRID_SEEDS seeds, one column per prompt.
        per_prompt = images.reshape(len(prompts), args.seeds, *images.shape[1:])
        for j in range(min(args.seeds, GRID_SEEDS)):
            grid_rows.append((f"{label[:34]} s{j}", per_prompt[:, j]))
    pipe.scheduler = original
    scale = max(1, 96 // int(grid_rows[0][1].shape[-1]))
    out = image_grid(grid_rows, args.out, scale=scale, column_titles=prompts)  # the prompt above its column
    return {
        "rows": rows,
        "out": out,
        "seconds": time.perf_counter() - t_start,
        "load_seconds": load_s,
        "prompts": prompts,
    }


def run_demo_command(args: argparse.Namespace) -> int:
    """Handler of ``lcm-plugin demo``: run it and print timings and quality figures."""
    result = run_demo(args)
    print("prompts (the grid's columns, left to right):")
    for i, p in enumerate(result["prompts"]):
        print(f"  {i + 1}. {p}")
    n = len(result["prompts"]) * args.seeds
    print(f"\n| row | UNet evals/img | time for {n} images (s) | adherence (all attributes) |")
    print("|---|---|---|---|")
    for r in result["rows"]:
        adh = f"{r['adherence']['all']:.2f}" if r["adherence"] else "n/a (needs the toy teacher and judge)"
        print(f"| {r['label']} | {r['unet_evals']} | {r['seconds']:.2f} | {adh} |")
    print(f"\npipeline load {result['load_seconds']:.1f} s; total {result['seconds']:.1f} s")
    print(f"wrote {result['out']}")
    return 0
