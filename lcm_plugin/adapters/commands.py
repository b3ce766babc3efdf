"""``lcm-plugin adapters list | download | inspect | convert``.

Heavy imports (torch, safetensors, huggingface_hub) stay inside the handlers so ``lcm-plugin --help`` is fast.
"""

from __future__ import annotations

import argparse
import json

ARCH_CHOICES = ("sd15", "sd2", "sdxl", "ssd1b")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapters`` command group to the top-level CLI."""
    parser = subparsers.add_parser(
        "adapters",
        help="list, download, inspect and convert LCM-LoRA adapters",
        description="Get LCM-LoRA adapters onto this machine and into your host.",
    )
    sub = parser.add_subparsers(dest="adapters_command", metavar="ACTION")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    p = sub.add_parser(
        "list", help="known few-step adapters, reference checkpoints and their sampling recipes"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("download", help="download a known adapter (or an https URL) into a LoRA folder")
    p.add_argument("adapter", help="registry name (see `adapters list`), Hub repo id, or https:// URL")
    p.add_argument(
        "--dest", default=".", help="target folder, e.g. ComfyUI/models/loras or webui/models/Lora"
    )
    p.add_argument("--name", help="file name in the target folder (default: <registry name>.safetensors)")
    p.add_argument("--for", dest="arch", choices=ARCH_CHOICES, help="refuse adapters for another base model")
    p.add_argument("--sha256", help="expected sha256 (overrides the registry value)")
    p.add_argument(
        "--file", default="pytorch_lora_weights.safetensors", help="file in an unregistered Hub repo"
    )
    p.add_argument("--revision", default="main", help="branch, tag or commit of an unregistered Hub repo")
    p.add_argument(
        "--no-hub", action="store_true", help="plain https from HF_ENDPOINT instead of huggingface_hub"
    )
    p.add_argument("--retries", type=int, default=3, help="resumptions after a broken transfer (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser(
        "inspect", help="format, base model, rank, alpha and targets of a .safetensors adapter"
    )
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sha256", action="store_true", help="also hash the file")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("convert", help="convert between diffusers/peft and kohya (ComfyUI, A1111) formats")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument(
        "--to",
        choices=("kohya", "diffusers"),
        default="kohya",
        help="kohya: loads in ComfyUI, A1111/Forge and diffusers; diffusers: pipe.load_lora_weights",
    )
    p.add_argument(
        "--layout",
        choices=("auto", "ldm", "diffusers"),
        default="auto",
        help="kohya UNet names: ldm (input_blocks_...) or diffusers (down_blocks_...); auto picks per model",
    )
    p.add_argument(
        "--for", dest="arch", choices=ARCH_CHOICES, help="expected base model (checked before loading)"
    )
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), help="cast the weights (default: keep)")
    p.set_defaults(handler=cmd_convert)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registry, each entry with its sampling recipe."""
    from lcm_plugin.adapters.recognition import recipe_of_entry
    from lcm_plugin.adapters.registry import every_adapter

    entries = every_adapter()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **e.__dict__,
                        "local_path": str(e.local_path) if e.local_path else None,
                        "url": e.url,
                        "recipe": json.loads(recipe_of_entry(e).to_metadata()),
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    for e in entries:
        size = f"{e.size:,} B" if e.size is not None else "size unknown"
        digest = e.sha256[:16] + "…" if e.sha256 else "sha256 unknown"
        where = e.repo_id or (str(e.local_path) if e.local_path else "not built")
        print(f"{e.name:20} {e.kind:10} {e.arch:6} {where}/{e.filename if e.repo_id else ''}".rstrip("/"))
        print(f"{'':20} {size}, {digest}. {e.notes}".rstrip())
        recipe = recipe_of_entry(e)
        print(f"{'':20} recipe {recipe.name}: {recipe.describe()}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download and install one adapter."""
    from lcm_plugin.adapters.download import download_adapter
    from lcm_plugin.commands.checks import check_writable_output

    if args.retries < 0:
        raise ValueError("--retries must be 0 or more")
    check_writable_output(args.dest, "folder", flag="--dest")  # before any byte is fetched
    result = download_adapter(
        args.adapter,
        args.dest,
        name=args.name,
        expect_arch=args.arch,
        sha256=args.sha256,
        use_hub=not args.no_hub,
        progress=not args.quiet,
        retries=args.retries,
        filename=args.file,
        revision=args.revision,
    )
    print(f"installed {result.path} ({result.size:,} bytes, sha256 {result.sha256})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe one adapter file."""
    from lcm_plugin.adapters.inspection import inspect_file

    report = inspect_file(args.path)
    data = report.to_dict()
    if args.sha256:
        from lcm_plugin.adapters.download import sha256_file

        data["sha256"] = sha256_file(args.path)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"file:        {report.path} ({report.file_size:,} bytes)")
    print(
        f"format:      {report.format}" + (f" (UNet names: {report.layout} layout)" if report.layout else "")
    )
    print(f"base model:  {report.arch.label}" + (f" [{report.arch.name}]" if report.arch.name else ""))
    for reason in report.arch.reasons:
        print(f"             - {reason}")
    print("modules:     " + ", ".join(f"{k}: {v}" for k, v in report.modules.items()))
    print("rank:        " + ", ".join(f"{k} ({v} modules)" for k, v in sorted(report.ranks.items())))
    print("alpha:       " + ", ".join(f"{k:g} ({v} modules)" for k, v in sorted(report.alphas.items())))
    print(f"parameters:  {report.parameters:,}  dtypes: " + ", ".join(report.dtypes))
    print("targets:     " + ", ".join(f"{k} x{v}" for k, v in sorted(report.targets.items())))
    if report.metadata:
        shown = {k: (v if len(v) <= 80 else v[:77] + "...") for k, v in sorted(report.metadata.items())}
        print("metadata:    " + "\n             ".join(f"{k} = {v}" for k, v in shown.items()))
    if report.unknown_keys:
        print(
            f"warning:     {len(report.unknown_keys)} keys not understood (first: {report.unknown_keys[0]})"
        )
    if report.unsupported_keys:
        print(
            f"warning:     {len(report.unsupported_keys)} LyCORIS/DoRA keys (first: {report.unsupported_keys[0]})"
        )
    if "sha256" in data:
        print(f"sha256:      {data['sha256']}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert one adapter file."""
    from lcm_plugin.adapters.convert import convert_file
    from lcm_plugin.commands.checks import check_writable_output

    check_writable_output(args.dst, "file", flag="output", suffixes=(".safetensors",))
    result = convert_file(
        args.src, args.dst, to=args.to, layout=args.layout, arch=args.arch, dtype=args.dtype
    )
    layout = f", {result.layout} layout" if result.target_format == "kohya" else ""
    print(
        f"wrote {result.output}: {result.target_format}{layout}, {result.modules} modules, base {result.arch} "
        f"(from {result.source_format})"
    )
    return 0
