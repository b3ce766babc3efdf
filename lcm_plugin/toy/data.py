"""Toy-world data for distillation and tests: a map-style dataset and the shipped asset paths."""

from __future__ import annotations

from pathlib import Path

import torch

from lcm_plugin.toy import paths, world


def teacher_path() -> Path:
    """Folder of the shipped toy teacher (a StableDiffusionPipeline folder); raises if it is missing."""
    if not (paths.TEACHER / "model_index.json").is_file():
        raise FileNotFoundError(
            f"toy teacher missing at {paths.TEACHER}; train it with `lcm-plugin toy train-teacher`"
        )
    return paths.TEACHER


class ToyDataset(torch.utils.data.Dataset):
    """Samples ``start .. start+length-1`` of a toy split as {"pixel_values": (3, 32, 32) in [-1, 1],
    "text": caption, "index": i}. Deterministic: item i is the same on every machine (no global RNG)."""

    def __init__(
        self,
        split: str = "train",
        length: int = 10000,
        start: int = 0,
        config: world.WorldConfig | None = None,
    ) -> None:
        if split not in world.SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {world.SPLITS}")
        if length < 1 or start < 0:
            raise ValueError(f"length must be >= 1 and start >= 0, got length={length}, start={start}")
        self.split, self.length, self.start = split, length, start
        self.config = config or world.WorldConfig()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a ToyDataset of length {self.length}")
        image, text, _ = world.sample(self.config, self.split, self.start + i)
        pixels = torch.from_numpy(image).permute(2, 0, 1).mul(2.0).sub(1.0)
        return {"pixel_values": pixels, "text": text, "index": self.start + i}
