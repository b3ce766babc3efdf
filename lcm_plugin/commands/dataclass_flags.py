"""Command-line flags from a config dataclass: every field ``name`` becomes ``--name`` (the one helper of the CLI).

Used by ``lcm-plugin train lora|lcd|lcf`` (``TrainConfig``) and ``lcm-plugin toy train-teacher|train-judge``
(``TeacherConfig``, ``JudgeTrainConfig``). Flags that are not given stay out of the parsed namespace
(``argparse.SUPPRESS``), so the dataclass defaults -- or a ``--config`` file -- decide them, and validation stays
in the dataclass's ``__post_init__``. Only the standard library is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

_SCALARS = (int, float, str)


def _field_kind(hint: Any) -> tuple[str, type]:
    """("scalar" | "bool" | "list", element type) of a field's type hint; ``X | None`` counts as ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
    if hint is bool:
        return "bool", bool
    if hint in _SCALARS:
        return "scalar", hint
    if typing.get_origin(hint) is list and typing.get_args(hint) and typing.get_args(hint)[0] in _SCALARS:
        return "list", typing.get_args(hint)[0]
    raise TypeError(
        f"no command-line flag for a field of type {hint!r}; use int, float, str, bool or list of those"
    )


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag (``action=DeprecatedFlag, new_flag="--new-name"``, ``help=argparse.SUPPRESS``):
    stores into the new flag's destination and prints a one-line notice that names the new flag."""

    def __init__(self, option_strings, dest, *, new_flag: str, **kw):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"notice: {option_string} is the old name of {self.new_flag} (same meaning); use {self.new_flag}.",
              file=sys.stderr)  # fmt: skip
        setattr(namespace, self.dest, values)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                        notes: Mapping[str, str] | None = None,
                        deprecated: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """Add ``--field-name`` for every field of the dataclass ``cls`` (except ``skip``).

    bool fields get ``--name/--no-name``, list fields take one or more values, ``X | None`` fields take an X. The
    help is the field's ``metadata["help"]`` plus ``notes[name]`` (what the command line adds) and the default.
    ``deprecated`` maps an old flag (``"--num-ddim-timesteps"``) to the field it now sets: it still works, is not
    listed in ``--help`` and prints a notice that names the new flag (scalar fields only).

    Raises:
        TypeError: a field type with no flag form (a programming error, found when the parser is built).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, element = _field_kind(hints[f.name])
        help_text = (
            f"{f.metadata.get('help', '')}{(notes or {}).get(f.name, '')} (default: {_default(f)})".lstrip()
        )
        flag = "--" + f.name.replace("_", "-")
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind == "list":
            parser.add_argument(flag, nargs="+", type=element, **common)
        else:
            parser.add_argument(flag, type=element, **common)
    for old, name in (deprecated or {}).items():
        kind, element = _field_kind(hints[name])
        if kind != "scalar":
            raise TypeError(f"deprecated flag {old}: only scalar fields have aliases, {name} is a {kind}")
        new_flag = "--" + name.replace("_", "-")
        parser.add_argument(old, dest=name, type=element, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                            action=DeprecatedFlag, new_flag=new_flag)  # fmt: skip


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line, as a dict for ``cls(**values)``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
