"""The judge: a small classifier of toy images whose penultimate features feed FD/KID and whose heads check
prompt adherence (our stand-in for FID's Inception network and for CLIP score).

Heads (see :meth:`lcm_plugin.toy.world.Scene.labels`): object count, background, shape/colour of object 1
(the only object, or the left/upper one of a pair), size and position (one object), relation axis and
shape/colour of object 2 (pairs). A head's label is -1 where it does not apply.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lcm_plugin.toy import world

logger = logging.getLogger(__name__)

HEADS: dict[str, int] = {
    "count": 2,
    "background": len(world.BACKGROUND_NAMES),
    "shape1": len(world.SHAPES),
    "colour1": len(world.COLOUR_NAMES),
    "size": len(world.SIZES),
    "position": len(world.POSITIONS),
    "axis": len(world.AXES),
    "shape2": len(world.SHAPES),
    "colour2": len(world.COLOUR_NAMES),
}
FEATURE_DIM = 128
FORMAT_VERSION = "1"


class Judge(nn.Module):
    """CNN on 3x32x32 images in [0, 1]: ``features(x)`` (N, 128) and ``forward(x)`` -> {head: logits}."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(
            block(3, width, 1),
            block(width, width, 2),
            block(width, 2 * width, 2),
            block(2 * width, 4 * width, 2),
        )
        # Flatten (not global pooling) keeps where things are, which the position/relation heads need.
        self.proj = nn.Linear(4 * width * 16, FEATURE_DIM)
        self.heads = nn.ModuleDict({name: nn.Linear(FEATURE_DIM, n) for name, n in HEADS.items()})
        # Divides the features for FD/KID so they have unit std on real images (KID's cubic kernel needs
        # O(1) features); set by calibration after training and stored in the file's metadata.
        self.feature_scale = 1.0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 128) of images (N, 3, 32, 32) in [0, 1] (float) or [0, 255] (uint8)."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if images.ndim != 4 or images.shape[1:] != (3, 32, 32):
            raise ValueError(f"the judge takes (N, 3, 32, 32) images, got shape {tuple(images.shape)}")
        return torch.nn.functional.silu(self.proj(self.body(images * 2.0 - 1.0).flatten(1)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {name: head(f) for name, head in self.heads.items()}


class JudgeFeatures(nn.Module):
    """Feature extractor in the form torchmetrics' FID/KID accept (``num_features`` + forward)."""

    def __init__(self, judge: Judge) -> None:
        super().__init__()
        self.judge = judge
        self.num_features = FEATURE_DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.judge.features(images) / self.judge.feature_scale).double()


def kid(real_features: torch.Tensor, fake_features: torch.Tensor, subset_size: int = 50, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", section 4): the unbiased MMD^2
    of the cubic kernel k(a, b) = (a.b / d + 1)^3 (torchmetrics' ``poly_mmd``), mean and std over random subsets.

    Row i of both feature sets must come from prompt i (the harness pairs real and generated images so). Each subset
    takes its real rows and its generated rows from *disjoint* prompts: the estimator assumes two independent
    samples, and a real and a generated image of one prompt are not independent. torchmetrics' KID draws the two
    subsets independently, so about subset_size^2 / n same-prompt pairs enter its cross term and bias it negative
    (real vs re-rendered real: -2259e-3 at n = 16; BENCHMARKS.md, toy world). ``subset_size`` is capped at n // 2.

    Raises:
        ValueError: the sets differ in size or have fewer than 4 rows (two disjoint subsets of >= 2).
    """
    from torchmetrics.image.kid import poly_mmd

    n = len(real_features)
    if len(fake_features) != n or n < 4:
        raise ValueError(
            f"KID needs two paired feature sets of the same size >= 4, got {n} and {len(fake_features)}"
        )
    m = min(subset_size, n // 2)
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        perm = torch.randperm(n, generator=gen)
        scores.append(poly_mmd(real_features[perm[:m]], fake_features[perm[m : 2 * m]]))
    values = torch.stack(scores).double()
    return float(values.mean()), float(values.std(unbiased=False))


def save_judge(judge: Judge, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write the judge's weights to a safetensors file (atomically), with its format in the metadata."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "heads": json.dumps(HEADS),
        "feature_scale": json.dumps(judge.feature_scale),
        **{k: json.dumps(v) for k, v in (extra or {}).items()},
    }
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, out)


def load_judge(path: str | os.PathLike) -> Judge:
    """Load a judge saved by :func:`save_judge` (safetensors only), in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"judge weights {p} not found; train them with `lcm-plugin toy train-judge`")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{p} is not a readable safetensors judge file ({err}); retrain it with `lcm-plugin toy train-judge`"
        ) from err
    if meta.get("format") != FORMAT_VERSION or json.loads(meta.get("heads", "{}")) != HEADS:
        raise ValueError(
            f"{p} was written for another judge format; retrain it with `lcm-plugin toy train-judge`"
        )
    judge = Judge()
    judge.load_state_dict(state)
    judge.feature_scale = float(json.loads(meta.get("feature_scale", "1.0")))
    return judge.eval()


@torch.no_grad()
def predict(judge: Judge, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Predicted class index per head for images (N, 3, 32, 32) in [0, 1]."""
    outs: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
    for i in range(0, len(images), batch):
        for name, logits in judge(images[i : i + batch]).items():
            outs[name].append(logits.argmax(dim=1))
    return {name: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for name, v in outs.items()}


def labels_tensor(scenes: Sequence[world.Scene]) -> dict[str, torch.Tensor]:
    """Ground-truth labels per head (-1 where not applicable) for a list of scenes."""
    rows = [s.labels() for s in scenes]
    return {name: torch.tensor([r[name] for r in rows], dtype=torch.long) for name in HEADS}


def adherence(judge: Judge, images: torch.Tensor, scenes: Sequence[world.Scene]) -> dict[str, float]:
    """Prompt adherence: per-attribute accuracy (only where the attribute applies) and ``all`` -- the fraction
    of images whose every applicable attribute is right. Images (N, 3, 32, 32) in [0, 1]."""
    if len(images) != len(scenes) or len(scenes) == 0:
        raise ValueError(
            f"need one scene per image and at least one image, got {len(images)} images, {len(scenes)} scenes"
        )
    pred, truth = predict(judge, images), labels_tensor(scenes)
    result: dict[str, float] = {}
    for name in HEADS:
        valid = truth[name] >= 0
        if valid.any():
            result[name] = float((pred[name][valid] == truth[name][valid]).float().mean())
    result["all"] = float(all_attributes_right(pred, truth).float().mean())
    return result


def all_attributes_right(pred: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per image: True where every attribute that applies to its scene (label >= 0) is read back right."""
    ok = torch.ones(len(next(iter(truth.values()))), dtype=torch.bool)
    for name in HEADS:
        ok &= (pred[name] == truth[name]) | (truth[name] < 0)
    return ok
