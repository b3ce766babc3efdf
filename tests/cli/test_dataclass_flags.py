"""The one dataclass -> argparse helper behind ``train lora|lcd|lcf`` and ``toy train-teacher|train-judge``."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from lcm_plugin.commands.dataclass_flags import add_dataclass_flags, dataclass_values


@dataclass(frozen=True)
class Example:
    steps: int = 3
    scale: float | None = None
    name: str = field(default="x", metadata={"help": "a name"})
    fast: bool = False
    sizes: list[int] = field(default_factory=lambda: [1, 2])


def _parse(argv: list[str], cls: type = Example, **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, cls, **kw)
    return parser.parse_args(argv)


def test_flags_parse_to_the_field_types_and_absent_flags_keep_the_defaults():
    args = _parse(["--steps", "5", "--scale", "0.5", "--fast", "--sizes", "4", "8"])
    values = dataclass_values(args, Example)
    assert values == {"steps": 5, "scale": 0.5, "fast": True, "sizes": [4, 8]}  # no "name": not given
    assert Example(**values) == Example(steps=5, scale=0.5, name="x", fast=True, sizes=[4, 8])
    assert dataclass_values(_parse(["--no-fast"]), Example) == {"fast": False}
    assert dataclass_values(_parse([]), Example) == {}


def test_help_has_the_field_help_the_notes_and_the_default():
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Example, skip=("steps",), notes={"name": "; CLI only"})
    text = parser.format_help()
    assert "--steps" not in text
    assert "a name; CLI only (default: x)" in " ".join(text.split())
    assert "(default: [1, 2])" in text


def test_a_field_without_a_flag_form_is_refused_when_the_parser_is_built():
    @dataclass
    class Bad:
        table: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match=r"no command-line flag for a field of type dict\[str, int\]"):
        _parse([], Bad)


def test_every_config_field_of_the_commands_is_a_flag():
    from lcm_plugin.toy.configs import JudgeTrainConfig, TeacherConfig
    from lora_training.config import TrainConfig

    for cls, skip in ((TrainConfig, ("method",)), (TeacherConfig, ()), (JudgeTrainConfig, ())):
        parser = argparse.ArgumentParser()
        add_dataclass_flags(parser, cls, skip=skip)
        dests = {a.dest for a in parser._actions} - {"help"}
        assert dests == {f.name for f in dataclasses.fields(cls)} - set(skip), cls


def test_a_deprecated_flag_sets_the_new_field_with_a_notice_and_is_hidden(capsys):
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Example, deprecated={"--n-steps": "steps"})
    assert dataclass_values(parser.parse_args(["--n-steps", "7"]), Example) == {"steps": 7}
    assert (
        capsys.readouterr().err.strip()
        == "notice: --n-steps is the old name of --steps (same meaning); use --steps."
    )
    assert "--n-steps" not in parser.format_help()
    with pytest.raises(TypeError, match="only scalar fields have aliases"):
        add_dataclass_flags(argparse.ArgumentParser(), Example, deprecated={"--size": "sizes"})


def test_train_keeps_the_old_grid_flag():
    """--num-ddim-timesteps (diffusers' name, our flag before 2026-12) still sets original_inference_steps."""
    from lcm_plugin.cli import build_parser
    from lora_training.commands import _config_from_args

    base = ["train", "lora", "--pretrained-model", "m", "--train-data-dir", "d"]
    for flag in ("--original-inference-steps", "--num-ddim-timesteps"):
        args = build_parser().parse_args([*base, flag, "20"])
        assert _config_from_args(args, "lora").original_inference_steps == 20
