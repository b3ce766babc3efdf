"""Engine sub-commands: ``lcm-plugin timesteps`` (inspect the grid) and ``lcm-plugin generate`` (any checkpoint)."""

from __future__ import annotations

import argparse
import logging
import time

from lcm_plugin.commands.dataclass_flags import DeprecatedFlag

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
    p.add_argument(
        "--original-inference-steps", type=int, default=50, help="N, the distillation grid (default 50)"
    )
    p.add_argument("--original-steps", dest="original_inference_steps", type=int, help=argparse.SUPPRESS,
                   action=DeprecatedFlag, new_flag="--original-inference-steps")  # fmt: skip
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
        "--lora",
        default=None,
        help="few-step LoRA .safetensors file or folder (diffusers or kohya keys); its recipe (LCM, TCD, Hyper-SD, "
        "PCM, SDXL-Lightning, DMD2: `adapters list`) is found from its metadata, sha256 or registry file name",
    )
    g.add_argument(
        "--recipe",
        default=None,
        help="sample with this recipe (`adapters list`) instead of the recognised one",
    )
    g.add_argument("--steps", type=int, default=None, help="steps (default: the recipe's, 4 for LCM)")
    g.add_argument(
        "--timesteps",
        default=None,
        help="explicit descending LCM timesteps, e.g. 999,899,749,549 (replaces --steps; off the distillation "
        "grid is allowed, with a warning)",
    )
    g.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="CFG scale; LCM-LoRA 1-2, full LCM 3-13 (default: the recipe's, 1.0 = no guidance for LCM-LoRA)",
    )
    g.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="1 = LCM, 0 = deterministic, 0.3 = TCD's default (default: the recipe's)",
    )
    g.add_argument("--size", type=int, default=None, help="image height and width (default: the model's)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--single-file-config",
        default=None,
        help="for a single-file --model: a local diffusers pipeline folder of the same architecture (its configs "
        "and tokenizers; nothing is downloaded), e.g. the folder the checkpoint was exported from",
    )
    g.add_argument("--out", default="lcm.png", help="output PNG (a grid when several prompts are given)")
    g.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)"
    )
    g.set_defaults(handler=_generate)


def _timesteps(args: argparse.Namespace) -> int:
    from lcm_plugin import core
    from lcm_plugin.k_sampler import lcm_sigmas

    n = args.original_inference_steps
    ts = core.lcm_timesteps(args.steps, n, 1000, args.strength)
    sigmas = lcm_sigmas(args.steps, denoise=args.strength, original_inference_steps=n)
    print("timesteps:", ts.tolist())
    print("sigmas (SD schedule):", [round(float(s), 4) for s in sigmas])
    return 0


def _check_generate_inputs(args: argparse.Namespace) -> tuple[int, ...] | None:
    """Every path and number of ``generate``, checked before the ~20 s of torch/diffusers imports."""
    from lcm_plugin.commands.checks import (
        check_finite,
        check_input_path,
        check_min_int,
        check_single_file_suffix,
        check_writable_output,
    )

    model = check_input_path(
        args.model, "model", hint="pass a diffusers pipeline folder or a .safetensors file"
    )
    if model.is_file():
        check_single_file_suffix(model)
    if args.single_file_config is not None:
        check_input_path(args.single_file_config, "--single-file-config", kind="folder")
    if args.lora is not None:
        check_input_path(args.lora, "LoRA")
    check_writable_output(args.out, "file", flag="--out", suffixes=(".png",))
    if args.steps is not None:
        check_min_int(args.steps, "--steps")
    if args.threads is not None:
        check_min_int(args.threads, "--threads")
    if args.size is not None and (args.size < 8 or args.size % 8):
        raise ValueError(f"--size must be a positive multiple of 8 (the VAE's latent grid), got {args.size}.")
    if args.guidance is not None:
        check_finite(args.guidance, "--guidance (1 = no guidance)", low=0.0)
    if args.gamma is not None:
        check_finite(args.gamma, "--gamma (1 = LCM, 0 = deterministic)", low=0.0, high=1.0)
    if args.recipe is not None:
        from lcm_plugin.adapters.recipe_table import get

        get(args.recipe)  # unknown names fail here, listing the known ones
    return parse_timesteps(args.timesteps) if args.timesteps is not None else None


def _to_pil(pipe, images) -> list:
    """PIL images from the pipeline's [0, 1] tensor output, refusing non-finite pixels (NaN would save as black)."""
    import torch

    bad = (~torch.isfinite(images)).flatten(1).any(dim=1)
    if bad.any():
        which = ", ".join(str(int(i) + 1) for i in torch.nonzero(bad).flatten()[:8])
        raise RuntimeError(
            f"the model produced NaN/inf pixels for {int(bad.sum())} of {len(images)} image(s) (prompt(s) {which}); "
            "nothing was written. Its weights are probably not finite (e.g. fused with a NaN --lora-scale, or a "
            "diverged training run): rebuild the model, or try another --lora."
        )
    return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images.clamp(0, 1)))


def _generate(args: argparse.Namespace) -> int:
    timesteps = _check_generate_inputs(args)  # before any heavy import
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from lcm_plugin.images import save_grid
    from lcm_plugin.pipeline_loading import load_lora, load_pipeline, lora_file
    from lcm_plugin.recipes_diffusers import apply_recipe, generate_recipe

    lora = lora_file(args.lora) if args.lora else None  # header checked before the model loads
    recipe, notice = generate_recipe(lora, args.recipe)  # metadata / sha256 / registry name, else plain LCM
    if notice:
        print(notice)
    pipe = load_pipeline(args.model, single_file_config=args.single_file_config, keep_safety_checker=True)
    if lora:
        load_lora(pipe, lora)
    pipe.set_progress_bar_config(disable=False)
    size = {} if args.size is None else {"height": args.size, "width": args.size}
    n_steps = len(timesteps) if timesteps is not None else args.steps
    call = apply_recipe(pipe, recipe, steps=n_steps, guidance_scale=args.guidance, gamma=args.gamma)
    if timesteps is not None:
        call["timesteps"] = list(
            timesteps
        )  # checked by the scheduler (order, range, grid) when the pipeline passes them
    n_steps = len(call["timesteps"])
    start = time.perf_counter()
    output = pipe(
        args.prompt,
        negative_prompt=[args.negative_prompt] * len(args.prompt) if args.negative_prompt else None,
        **call,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
        **size,
    )
    elapsed = time.perf_counter() - start
    images = _to_pil(pipe, output.images)
    save_grid(images, args.out, columns=len(images))
    at = f" at timesteps {list(timesteps)}" if timesteps is not None else ""
    print(
        f"{len(images)} image(s), {n_steps} LCM steps{at}, recipe {recipe.name}, {elapsed:.2f} s -> {args.out}"
    )
    return 0
