"""The ``lcm-plugin`` command line.

Each feature module contributes its sub-commands through a ``register(subparsers)`` function, so this file
only lists them. Feature modules keep heavy imports (torch, diffusers, peft) inside their handlers, which keeps
``lcm-plugin --help`` fast; ``lora_training`` ships in the same distribution as ``lcm_plugin``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lcm_plugin import __version__
from lcm_plugin.adapters import commands as adapter_commands
from lcm_plugin.commands import engine as engine_commands
from lcm_plugin.toy import commands as toy_commands
from lora_training import commands as train_commands

# Each module defines register(subparsers); the order is the order of `lcm-plugin --help`.
_COMMAND_MODULES = (engine_commands, toy_commands, adapter_commands, train_commands)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="lcm-plugin", description="Latent Consistency Models for any Stable Diffusion checkpoint."
    )
    parser.add_argument("--version", action="version", version=f"lcm-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lcm-plugin`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, OSError, ModuleNotFoundError) as err:
        # User-facing errors: one clear line, no traceback (use -v for the traceback). Commands check their
        # inputs and outputs before working; the OSError and missing-package lines are the fallback for the rest.
        if args.verbose:
            raise
        print(f"lcm-plugin {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 1


def error_line(err: BaseException) -> str:
    """The one line ``main`` prints for a user-facing error."""
    from lcm_plugin.commands.checks import summarise_message

    if isinstance(err, ModuleNotFoundError):
        return (
            f"the Python package {err.name!r} is not installed; run `bash scripts/install.sh` "
            f"(or `pip install {err.name}`) and try again."
        )
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.strerror:
        where = f" {err.filename}" if err.filename else ""
        return f"{err.strerror}:{where} (the operating system refused; check the path and free space, or run with -v)"
    return summarise_message(str(err) or type(err).__name__)


if __name__ == "__main__":
    sys.exit(main())
