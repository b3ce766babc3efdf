"""Checks of command-line inputs that run before any work or heavy import (torch, diffusers).

Every command checks its paths and numbers first, so a typo fails in milliseconds with a message that says what
to do, instead of after 20 s of imports, a model load or a sampling run. Only the standard library is imported.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

OUTPUT_KINDS = ("file", "folder")
_NAME_MAX = 255  # bytes per path component on ext4, xfs, btrfs, APFS and NTFS
_MAX_LINES = 4  # an error message longer than this is summarised (size-mismatch lists run to ~220 lines)


def check_writable_output(path: str | os.PathLike, kind: str, *, flag: str = "output",
                          suffixes: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """Fail now if ``path`` cannot be written later as a ``kind`` ("file" or "folder"); nothing is left behind.

    Refused: an empty path; a name longer than 255 bytes; a file path that is a folder (or ends in a separator);
    a folder path that is a file; a path under a file; a path whose nearest existing folder does not
    accept new entries (probed by creating and removing a hidden temporary folder there, which also holds for
    root, read-only mounts and /proc-like file systems, where ``os.access`` is not reliable); a file name whose
    suffix is not one of ``suffixes`` (lower-case, with the dot), when given.

    Args:
        path: the output path as the user gave it.
        kind: ``"file"`` or ``"folder"``.
        flag: the option name for the message, e.g. ``"--out"``.
        suffixes: accepted file suffixes, e.g. ``(".png",)``; empty accepts any.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: the path cannot be written; the message names the reason and what to pass instead.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {OUTPUT_KINDS}, got {kind!r}")
    text = os.fspath(path)
    if not text.strip():
        raise ValueError(f"{flag} is empty; give a {kind} path.")
    if "\0" in text:
        raise ValueError(f"{flag} {text!r} contains a NUL character; give a plain {kind} path.")
    p = Path(text)
    for part in p.parts:  # first: stat() itself fails on an over-long name
        if len(os.fsencode(part)) > _NAME_MAX:
            raise ValueError(
                f"{flag}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; file systems allow "
                f"{_NAME_MAX}; choose a shorter name."
            )
    try:
        anchor = _check_kind_and_anchor(p, text, kind, flag, suffixes)
    except OSError as err:  # e.g. a component that is a file, a loop of links, a permission-denied parent
        raise ValueError(f"{flag} {p} cannot be used ({err.strerror}); choose another path.") from None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lcm-plugin-write-check-", dir=anchor))
    except OSError as err:
        raise ValueError(
            f"{flag} {p} cannot be written: the folder {anchor} does not accept new files ({err.strerror}); "
            "choose a folder you can write to."
        ) from None
    return p


def _check_kind_and_anchor(p: Path, text: str, kind: str, flag: str, suffixes: tuple[str, ...]) -> Path:
    """The nearest existing folder above (or at) the output, after the kind and suffix checks."""
    if kind == "file":
        if p.is_dir() or text.endswith(("/", os.sep)):
            example = p / ("out" + (suffixes[0] if suffixes else ""))
            raise ValueError(f"{flag} {p} is a folder; give a file name inside it, e.g. {example}.")
        if suffixes and p.suffix.lower() not in suffixes:
            raise ValueError(
                f"{flag} {p} must end in {' or '.join(suffixes)} (the format written), "
                f"e.g. {p.with_suffix(suffixes[0])}."
            )
    elif p.exists() and not p.is_dir():
        raise ValueError(
            f"{flag} {p} is a file, not a folder; give a folder path (it is created if missing)."
        )
    anchor = p if kind == "folder" else p.parent
    while not anchor.exists() and not anchor.is_symlink() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ValueError(
            f"{flag} {p} cannot be created: {anchor} is a file, not a folder; choose another path."
        )
    return anchor


def check_input_path(path: str | os.PathLike, what: str, *, kind: str | None = None, hint: str = "") -> Path:
    """``Path(path)`` if it exists (and is a ``kind``, "file" or "folder", when given), else a clear error.

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ValueError: it is a folder where a file is needed, or the other way round.
    """
    p = Path(path)
    tail = f"; {hint}" if hint else ""
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist{tail}.")
    if kind == "file" and p.is_dir():
        raise ValueError(f"{what} {p} is a folder, not a file{tail}.")
    if kind == "folder" and not p.is_dir():
        raise ValueError(f"{what} {p} is a file, not a folder{tail}.")
    return p


def check_single_file_suffix(path: Path) -> None:
    """Refuse a single-file checkpoint that is not ``.safetensors`` (pickled .ckpt/.bin/.pt can run code)."""
    if path.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{path.name}: only .safetensors single-file checkpoints are loaded (never pickled .ckpt/.bin: pickle "
            "files can run code); convert it to .safetensors in a trusted environment first."
        )


def check_finite(value: float, flag: str, *, low: float | None = None, high: float | None = None) -> float:
    """``value`` if it is a finite number in [low, high] (bounds optional), else a ValueError naming ``flag``."""
    if not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}.")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{flag} must be in [{lo}, {hi}], got {value:g}.")
    return value


def check_min_int(value: int, flag: str, minimum: int = 1) -> int:
    """``value`` if it is >= ``minimum``, else a ValueError naming ``flag``."""
    if value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}.")
    return value


_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape (?:torch\.Size\()?(\[[^\]]*\])\)? from checkpoint, "
    r"the shape in current model is (?:torch\.Size\()?(\[[^\]]*\])"
)


def summarise_message(text: str, max_lines: int = _MAX_LINES) -> str:
    """One short message from a long one: torch's ``size mismatch for ...`` lists become a count and one example;
    anything else longer than ``max_lines`` lines keeps its first lines and says how many were left out."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    mismatches = [m for line in lines for m in _MISMATCH.finditer(line)]
    if mismatches:
        first = mismatches[0]
        rest = [
            line for line in lines if "size mismatch for" not in line and not line.startswith("Error(s) in")
        ]
        head = " ".join(rest[:1])
        name = re.sub(r"\.default(?:_\d+)?(?=\.)", "", first.group(1))  # peft's adapter name, not the user's
        example = f"{name}: file {first.group(2)}, model {first.group(3)}"
        summary = f"{len(mismatches)} weight(s) have the wrong shape for this model (first: {example})"
        return f"{head} {summary}".strip() if head else summary
    if len(lines) <= max_lines:
        return " ".join(lines)
    return " ".join(lines[:max_lines]) + f" ... ({len(lines) - max_lines} more lines; run with -v for all)"
