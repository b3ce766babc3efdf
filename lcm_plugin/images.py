"""Small image helpers shared by the commands: grids and atomic PNG writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def save_grid(images: Sequence, path: str | os.PathLike, columns: int) -> Path:
    """Paste equally sized PIL images into a grid and write it as a PNG atomically (temp file + rename)."""
    from PIL import Image

    if not images:
        raise ValueError("no images to save.")
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, ((i % columns) * w, (i // columns) * h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            grid.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
