"""``lcm-plugin toy make-world``: write toy-world images (PNG) and captions (JSON lines) to a folder."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lcm_plugin.toy import world


def export_split(
    out_dir: str | os.PathLike, split: str, count: int, config: world.WorldConfig | None = None
) -> Path:
    """Write ``count`` samples of ``split`` as ``NNNNNN.png`` plus ``captions.jsonl`` (file, caption, scene)."""
    from PIL import Image

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    config = config or world.WorldConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, text, scene) in enumerate(world.iterate(config, split, count)):
        name = f"{i:06d}.png"
        Image.fromarray((img * 255).round().astype("uint8")).save(out / name)
        lines.append(json.dumps({"file_name": name, "text": text, "scene": dataclasses.asdict(scene)}))
    tmp = out / "captions.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out / "captions.jsonl")
    return out
