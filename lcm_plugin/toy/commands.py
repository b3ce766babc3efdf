"""``lcm-plugin toy ...`` and ``lcm-plugin demo`` sub-commands (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lcm_plugin.commands.dataclass_flags import add_dataclass_flags, dataclass_values
from lcm_plugin.toy import paths


def _train_teacher(args: argparse.Namespace) -> int:
    from lcm_plugin.toy.configs import TeacherConfig
    from lcm_plugin.toy.teacher import train_teacher

    train_teacher(args.out, TeacherConfig(**dataclass_values(args, TeacherConfig)), resume=args.resume)
    return 0


def _train_judge(args: argparse.Namespace) -> int:
    from lcm_plugin.toy.configs import JudgeTrainConfig
    from lcm_plugin.toy.judge_train import train_judge

    train_judge(args.out, JudgeTrainConfig(**dataclass_values(args, JudgeTrainConfig)))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lcm_plugin.toy.evaluate_cmd import run_evaluate_command

    return run_evaluate_command(args)


def _make_world(args: argparse.Namespace) -> int:
    from lcm_plugin.commands.checks import check_writable_output
    from lcm_plugin.toy.export import export_split

    check_writable_output(args.out, "folder", flag="--out")  # before the first image is drawn
    export_split(args.out, args.split, args.count)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lcm_plugin.toy.demo import run_demo_command

    return run_demo_command(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``toy`` (train-teacher, train-judge, evaluate, make-world) and ``demo`` to the CLI."""
    from lcm_plugin.toy import world
    from lcm_plugin.toy.configs import JudgeTrainConfig, TeacherConfig
    from lcm_plugin.toy.demo import add_demo_args
    from lcm_plugin.toy.evaluate_cmd import add_evaluate_args

    toy = subparsers.add_parser("toy", help="toy world: train the teacher/judge, evaluate samplers")
    sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)

    p = sub.add_parser("train-teacher", help="train the toy SD teacher and save a diffusers pipeline folder")
    p.add_argument("--out", type=Path, default=paths.TEACHER, help="output pipeline folder")
    p.add_argument(
        "--resume", type=Path, default=None, help="continue UNet training from this pipeline folder"
    )
    add_dataclass_flags(p, TeacherConfig)
    p.set_defaults(handler=_train_teacher)

    p = sub.add_parser(
        "train-judge", help="train the judge classifier (features for FD/KID + attribute heads)"
    )
    p.add_argument("--out", type=Path, default=paths.JUDGE, help="output .safetensors file")
    add_dataclass_flags(p, JudgeTrainConfig)
    p.set_defaults(handler=_train_judge)

    p = sub.add_parser("evaluate", help="FD / KID / prompt adherence vs steps for several samplers")
    add_evaluate_args(p)
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("make-world", help="write toy-world images and captions (PNG + captions.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--split", default="train", choices=world.SPLITS, help="train, val, test or heldout")
    p.add_argument("--count", type=int, default=1000, help="number of images")
    p.set_defaults(handler=_make_world)

    p = subparsers.add_parser(
        "demo", help="generate a grid with the toy teacher (and LCM-LoRA) and print timings"
    )
    add_demo_args(p)
    p.set_defaults(handler=_demo)
