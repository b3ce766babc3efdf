"""Engine sub-commands: ``lcm-plugin timesteps`` (inspect the grid) and ``lcm-plugin generate`` (any checkpoint)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def parse_timesteps(text: str) -> tuple[int, ...]:
    """ "999,899,749,549" -> (999, 899, 749, 549); order and range are checked by the LCM scheduler's rules."""
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(
            f"timesteps must be comma-separated integers like 999,749,499,249, got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"timesteps must list at least one integer, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine's sub-commands to the top-level parser."""
    p = subparsers.add_parser(
        "timesteps", help="print the LCM timesteps and sigmas for a step count and strength"
    )
    p.add_argument("--steps", type=int, default=4, help="number of LCM steps (default 4)")
    p.add_argument(
        "--strength", type=float, default=1.0, help="img2img strength / denoise in (0, 1] (default 1.0)"
    )
    p.add_argument("--original-steps", type=int, default=50, help="distillation grid size N (default 50)")
    p.set_defaults(handler=_timesteps)

    g = subparsers.add_parser(
        "generate", help="generate images with LCM from a diffusers checkpoint folder or single file"
    )
    g.add_argument(
        "--model", required=True, help="diffusers pipeline folder, or a .safetensors single-file checkpoint"
    )
    g.add_argument("--prompt", required=True, action="append", help="prompt (repeat for several images)")
    g.add_argument("--negative-prompt", default=None, help="negative prompt (acts only with --guidance > 1)")
    g.add_argument(
        "--lora", default=None, help="LCM-LoRA .safetensors file or folder to load (diffusers or kohya keys)"
    )
    g.add_argument("--steps", type=int, default=4, help="LCM steps (default 4)")
    g.add_argument(
        "--timesteps",
        default=None,
        help="explicit descending LCM timesteps, e.g. 999,899,749,549 (replaces --steps; off the distillation "
        "grid is allowed, with a warning)",
    )
    g.add_argument(
        "--guidance", type=float, default=1.0, help="CFG scale; LCM-LoRA 1-2, full LCM 3-13 (default 1.0)"
    )
    g.add_argument("--gamma", type=float, default=1.0, help="1 = LCM, 0 = deterministic, 0.3 = TCD's default")
    g.add_argument("--size", type=int, default=None, help="image height and width (default: the model's)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--out", default="lcm.png", help="output PNG (a grid when several prompts are given)")
    g.set_defaults(handler=_generate)


def _timesteps(args: argparse.Namespace) -> int:
    from lcm_plugin import core
    from lcm_plugin.k_sampler import lcm_sigmas

    ts = core.lcm_timesteps(args.steps, args.original_steps, 1000, args.strength)
    sigmas = lcm_sigmas(args.steps, denoise=args.strength, original_inference_steps=args.original_steps)
    print("timesteps:", ts.tolist())
    print("sigmas (SD schedule):", [round(float(s), 4) for s in sigmas])
    return 0


def load_pipeline(model: str):
    """A diffusers text-to-image pipeline from a local folder or single-file checkpoint (offline-safe)."""
    from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(
            f"model {model!r} does not exist; pass a diffusers folder or a .safetensors file."
        )
    if path.is_dir():
        return AutoPipelineForText2Image.from_pretrained(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path.name}: only .safetensors single-file checkpoints are loaded (never pickled .ckpt/.bin)."
        )
    try:
        return StableDiffusionXLPipeline.from_single_file(path)
    except Exception:  # noqa: BLE001 -- diffusers raises several types for an architecture mismatch
        return StableDiffusionPipeline.from_single_file(path)


def _generate(args: argparse.Namespace) -> int:
    import torch

    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
    from lcm_plugin.images import save_grid

    timesteps = parse_timesteps(args.timesteps) if args.timesteps is not None else None  # before loading
    pipe = load_pipeline(args.model)
    from lcm_plugin.adapters.inspection import distillation_grid_size

    grid = distillation_grid_size(args.lora) if args.lora else None  # our adapters record their grid
    extra = {} if grid is None else {"original_inference_steps": grid}
    pipe.scheduler = LCMPluginScheduler.from_config(pipe.scheduler.config, gamma=args.gamma, **extra)
    if args.lora:
        pipe.load_lora_weights(args.lora)
    pipe.set_progress_bar_config(disable=False)
    size = {} if args.size is None else {"height": args.size, "width": args.size}
    # the scheduler checks explicit timesteps (order, range, grid) when the pipeline hands them over
    schedule = {"timesteps": list(timesteps)} if timesteps is not None else {"num_inference_steps": args.steps}
    n_steps = len(timesteps) if timesteps is not None else args.steps
    start = time.perf_counter()
    images = pipe(
        args.prompt,
        negative_prompt=[args.negative_prompt] * len(args.prompt) if args.negative_prompt else None,
        **schedule,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
        **size,
    ).images
    elapsed = time.perf_counter() - start
    save_grid(images, args.out, columns=len(images))
    at = f" at timesteps {list(timesteps)}" if timesteps is not None else ""
    print(f"{len(images)} image(s), {n_steps} LCM steps{at}, {elapsed:.2f} s -> {args.out}")
    return 0
