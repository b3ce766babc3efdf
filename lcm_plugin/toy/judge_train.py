"""Train and validate the judge (``lcm-plugin toy train-judge``)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lcm_plugin.toy import world
from lcm_plugin.toy.configs import JudgeTrainConfig
from lcm_plugin.toy.judge import HEADS, Judge, adherence, labels_tensor, save_judge

logger = logging.getLogger(__name__)

# Validation images: the judge never sees these indices of the test/heldout splits.
VALID_COUNT = 2000
HELDOUT_TRAIN_OFFSET = 100_000


def real_images(split: str, count: int, start: int = 0, config: world.WorldConfig | None = None):
    """Real toy images as a float tensor (N, 3, 32, 32) in [0, 1], plus their scenes and captions."""
    arrays, captions, scenes = world.make_arrays(config or world.WorldConfig(), split, count, start)
    return torch.from_numpy(arrays).float() / 255.0, scenes, captions


def validate(judge: Judge, count: int = VALID_COUNT) -> dict[str, dict[str, float]]:
    """Adherence of real images to their own captions on held-out real images (test split and heldout split)."""
    out = {}
    for split in ("test", "heldout"):
        images, scenes, _ = real_images(split, count)
        out[split] = adherence(judge, images, scenes)
    return out


@torch.no_grad()
def calibrate_feature_scale(judge: Judge, count: int = 2000) -> float:
    """Set ``judge.feature_scale`` to the std of its features on real ``val`` images; returns it."""
    images, _, _ = real_images("val", count)
    judge.feature_scale = 1.0
    judge.feature_scale = float(
        torch.cat([judge.features(images[i : i + 500]) for i in range(0, count, 500)]).std()
    )
    return judge.feature_scale


def train_judge(out_path: str | os.PathLike, cfg: JudgeTrainConfig) -> Path:
    """Train the judge on ``train`` plus far-away ``heldout`` indices, validate, and save it."""
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # initialisation of the nn layers
    t0 = time.time()
    half = cfg.n_train // 2
    a_img, a_sc, _ = real_images("train", cfg.n_train - half)
    # The heldout split's low indices are reserved for validation/evaluation; train on indices far above.
    b_img, b_sc, _ = real_images("heldout", half, HELDOUT_TRAIN_OFFSET)
    images = torch.cat([a_img, b_img])
    labels = labels_tensor(a_sc + b_sc)
    logger.info("judge data ready (%d images) in %.0f s", len(images), time.time() - t0)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    judge.train()
    for step in tqdm(range(cfg.steps), desc="judge", mininterval=10):
        idx = torch.randint(0, len(images), (cfg.batch,), generator=gen)
        x = images[idx]
        # Mild noise so the checker does not depend on exact pixel statistics of the renderer.
        x = (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        logits = judge(x)
        loss = sum(F.cross_entropy(logits[h], labels[h][idx], ignore_index=-1) for h in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            logger.info("judge step %d loss %.4f", step, loss.item())
    judge.eval()
    logger.info("feature scale %.4f", calibrate_feature_scale(judge))
    report = validate(judge)
    for split, acc in report.items():
        logger.info("judge on real %s images: %s", split, {k: round(v, 4) for k, v in acc.items()})
    save_judge(judge, out_path, extra={"validation": report, "config": cfg.__dict__})
    logger.info("judge saved to %s in %.1f min", out_path, (time.time() - t0) / 60)
    return Path(out_path)
