"""``lcm-plugin train ...`` sub-commands. Heavy imports stay inside the handlers.

- ``lcm-plugin train lora|lcd|lcf [--config run.json] [--option value ...]``: every TrainConfig field is a flag.
- ``lcm-plugin train cache``: precompute the latent / text-embedding cache.
- ``lcm-plugin train fuse``: fuse an LCM-LoRA into a base model and save a full LCM pipeline (or, with
  ``--single-file``, one original-layout ``.safetensors`` checkpoint for ComfyUI/A1111).
- ``lcm-plugin train to-kohya``: not here -- use ``lcm-plugin adapters`` (the adapters package converts files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lcm_plugin.commands.dataclass_flags import add_dataclass_flags, dataclass_values

# Where the CLI adds to a TrainConfig field's help: behaviour of the command line itself.
_CLI_NOTES = {
    "resume_from_checkpoint": "; with 'latest' and no checkpoint-N in output_dir yet, the run prints a one-line "
    "notice and starts at step 0, so one command both starts and resumes a run",
}


def _config_from_args(args: argparse.Namespace, method: str):
    from lora_training.config import TrainConfig

    values: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist.")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"config file {path} is not valid JSON ({err}); fix it or drop --config."
            ) from None
        if not isinstance(loaded, dict):
            raise ValueError(
                f"config file {path} holds a JSON {type(loaded).__name__}; it must be one object of TrainConfig "
                'fields, e.g. {"learning_rate": 1e-4}.'
            )
        values.update(loaded)
    values.update(dataclass_values(args, TrainConfig))
    values["method"] = method
    return TrainConfig.from_dict(values)


def _train(args: argparse.Namespace) -> int:
    from lcm_plugin.commands.checks import check_writable_output

    cfg = _config_from_args(args, args.method)
    check_writable_output(cfg.output_dir, "folder", flag="--output-dir")  # before the models load
    if cfg.resume_from_checkpoint == "latest":
        from lora_training.checkpoint import list_checkpoints

        if not list_checkpoints(cfg.output_dir):
            print(
                f"notice: --resume-from-checkpoint latest: no checkpoint-N in {cfg.output_dir} yet, starting at step 0",
                file=sys.stderr,
            )
    from lora_training.trainer import Trainer

    result = Trainer(cfg).train()
    for kind, path in result.outputs.items():
        print(f"{kind}: {path}")
    loss = f"{result.final_loss:.5g}" if result.losses else "n/a (no step run: exported the checkpoint)"
    print(f"steps: {result.steps}  final loss: {loss}  skipped non-finite steps: {result.skipped_nan_steps}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    import torch

    from lcm_plugin.commands.checks import check_input_path, check_writable_output
    from lcm_plugin.pipeline_loading import load_pipeline
    from lora_training.cache import build_cache
    from lora_training.data import CaptionFolder, WebDatasetShards
    from lora_training.teachers import teacher_parts

    if bool(args.train_data_dir) == bool(args.webdataset_shards):
        raise ValueError("pass exactly one of --train-data-dir or --webdataset-shards.")
    check_input_path(args.pretrained_model, "--pretrained-model")
    check_writable_output(args.output, "file", flag="--output", suffixes=(".safetensors",))
    source = (CaptionFolder(args.train_data_dir, resolution=args.resolution) if args.train_data_dir
              else WebDatasetShards(args.webdataset_shards, resolution=args.resolution))  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(args.pretrained_model, single_file_config=args.single_file_config).to(device)
    path = build_cache(
        teacher_parts(pipe),
        source,
        args.output,
        resolution=args.resolution,
        batch_size=args.batch_size,
        device=device,
    )
    print(f"cache: {path}")
    return 0


def _fuse(args: argparse.Namespace) -> int:
    from lcm_plugin.commands.checks import check_finite, check_input_path, check_writable_output

    check_finite(args.lora_scale, "--lora-scale")  # NaN would be fused into every weight and saved
    check_input_path(
        args.base, "--base", hint="pass a diffusers pipeline folder or a .safetensors checkpoint"
    )
    check_input_path(args.lora, "--lora", kind="file")
    # (fuse_lora itself checks that a --single-file output ends in .safetensors)
    check_writable_output(args.output, "file" if args.single_file else "folder", flag="--output")
    _check_finite_lora(args.lora)
    from lora_training.export import fuse_lora

    out = fuse_lora(args.base, args.lora, args.output, single_file_config=args.single_file_config,
                    lora_scale=args.lora_scale, single_file=args.single_file)  # fmt: skip
    print(f"full LCM {'single-file checkpoint' if args.single_file else 'pipeline'}: {out}")
    return 0


def _check_finite_lora(path: str) -> None:
    """Refuse a LoRA file holding NaN/inf (a diverged run): fused, it would make every image black."""
    import torch

    from lcm_plugin.adapters.safetensors_io import load_tensors

    tensors, _ = load_tensors(path)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"LoRA {path} holds NaN/inf in {len(bad)} of {len(tensors)} tensors (first: {bad[0]}); it comes from "
            "a diverged run: use an earlier checkpoint or retrain (e.g. a lower learning rate)."
        )


def register(subparsers) -> None:
    """Add ``train`` with its sub-commands to the lcm-plugin CLI."""
    from lora_training.config import TrainConfig  # dataclasses only: no torch

    train = subparsers.add_parser("train", help="LCM distillation / fine-tuning (LCM-LoRA, full LCD, LCF)")
    sub = train.add_subparsers(dest="train_command", metavar="{lora,lcd,lcf,cache,fuse}")
    helps = {"lora": "distil an LCM-LoRA from a Stable Diffusion teacher (peft LoRA on the UNet)",
             "lcd": "full-model latent consistency distillation with the w-embedding",
             "lcf": "latent consistency fine-tuning of an LCM / LCM-LoRA on your data (no teacher)"}  # fmt: skip
    for method, text in helps.items():
        p = sub.add_parser(method, help=text, description=text)
        p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
        add_dataclass_flags(p, TrainConfig, skip=("method",), notes=_CLI_NOTES,
                            deprecated={"--num-ddim-timesteps": "original_inference_steps"})  # fmt: skip
        p.set_defaults(handler=_train, method=method)
    cache = sub.add_parser("cache", help="precompute VAE latents and text embeddings (safetensors)")
    cache.add_argument(
        "--pretrained-model", required=True, help="teacher pipeline folder or single-file checkpoint"
    )
    cache.add_argument(
        "--single-file-config", default=None, help="local diffusers config folder for a single file"
    )
    cache.add_argument("--train-data-dir", default=None, help="image folder with caption sidecars")
    cache.add_argument("--webdataset-shards", nargs="+", default=None, help="webdataset .tar shards")
    cache.add_argument("--resolution", type=int, default=512, help="pixels (default 512)")
    cache.add_argument("--batch-size", type=int, default=8, help="encoding batch size (default 8)")
    cache.add_argument("--output", required=True, help="cache file (.safetensors)")
    cache.set_defaults(handler=_cache)
    fuse = sub.add_parser(
        "fuse", help="fuse an LCM-LoRA into its base model and save a full LCM pipeline folder"
    )
    fuse.add_argument("--base", required=True, help="base pipeline folder or single-file checkpoint")
    fuse.add_argument("--lora", required=True, help="LCM-LoRA .safetensors (diffusers or kohya keys)")
    fuse.add_argument(
        "--output", required=True, help="output pipeline folder (a .safetensors file with --single-file)"
    )
    fuse.add_argument("--lora-scale", type=float, default=1.0, help="LoRA scale to fuse (default 1.0)")
    fuse.add_argument(
        "--single-file-config", default=None, help="local diffusers config folder for a single file"
    )
    fuse.add_argument(
        "--single-file",
        action="store_true",
        help="write one original-layout .safetensors (ComfyUI Load Checkpoint, A1111) instead of a folder",
    )
    fuse.set_defaults(handler=_fuse)
    train.set_defaults(handler=lambda a: (train.print_help(), 2)[1])
