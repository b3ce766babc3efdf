"""The skipping-step timestep grid of LCM (Luo et al. 2023, section 4.3, "skipping-step").

LCM is distilled on ``original_inference_steps`` = N timesteps t_i = i*k - 1 (k = T // N), so at
inference it must only be queried on (a subset of) that grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def _check_strength(strength: float) -> None:
    if not 0.0 < strength <= 1.0:
        raise ValueError(
            f"strength must be in (0, 1], got {strength}; 1.0 is text-to-image, lower keeps more of the input image."
        )


def training_grid(
    original_inference_steps: int = 50, num_train_timesteps: int = 1000, strength: float = 1.0
) -> np.ndarray:
    """Ascending distillation grid t_i = i*k - 1 for i = 1..int(N*strength), k = T // N (int64)."""
    if not 1 <= original_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"original_inference_steps must be in [1, {num_train_timesteps}] (the number of training timesteps), "
            f"got {original_inference_steps}; LCM checkpoints use 50."
        )
    _check_strength(strength)
    k = num_train_timesteps // original_inference_steps
    return np.arange(1, int(original_inference_steps * strength) + 1, dtype=np.int64) * k - 1


def lcm_timesteps(
    num_inference_steps: int,
    original_inference_steps: int = 50,
    num_train_timesteps: int = 1000,
    strength: float = 1.0,
) -> np.ndarray:
    """Descending inference timesteps: ``num_inference_steps`` evenly indexed entries of the reversed grid.

    With strength < 1 (img2img) only the first int(N*strength) grid entries are eligible, so every
    requested step is spent inside the noise range the image is actually denoised over.
    Example (N=50): 4 steps -> [999, 759, 499, 259]; 4 steps at strength 0.5 -> [499, 379, 259, 139].
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
    if num_inference_steps > original_inference_steps:
        raise ValueError(
            f"num_inference_steps ({num_inference_steps}) cannot exceed original_inference_steps "
            f"({original_inference_steps}): LCM inference timesteps are a subset of the distillation grid. "
            "Use fewer steps or a larger original_inference_steps."
        )
    grid = training_grid(original_inference_steps, num_train_timesteps, strength)
    if len(grid) < num_inference_steps:
        raise ValueError(
            f"strength {strength} leaves only {len(grid)} of {original_inference_steps} grid timesteps, fewer than "
            f"num_inference_steps ({num_inference_steps}). Use at most {len(grid)} steps or strength >= "
            f"{num_inference_steps / original_inference_steps}."
        )
    reversed_grid = grid[::-1]
    indices = np.floor(np.linspace(0, len(reversed_grid), num=num_inference_steps, endpoint=False)).astype(
        np.int64
    )
    return reversed_grid[indices].copy()


def validate_custom_timesteps(
    timesteps: Sequence[int],
    original_inference_steps: int = 50,
    num_train_timesteps: int = 1000,
    strength: float = 1.0,
) -> np.ndarray:
    """Check a user timestep list and apply img2img ``strength`` to it (keep its last int(n*strength) entries).

    Timesteps must be integers, strictly descending and in [0, num_train_timesteps). Entries off the
    distillation grid are allowed (as in diffusers) but logged, since the model was never trained there.
    """
    _check_strength(strength)
    values = np.asarray(list(timesteps))
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("custom timesteps must be a non-empty 1-D list of integers.")
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(f"custom timesteps must be integers, got {values.tolist()}.")
    values = values.astype(np.int64)
    if np.any(np.diff(values) >= 0):
        raise ValueError(f"custom timesteps must be strictly descending, got {values.tolist()}.")
    if values[0] >= num_train_timesteps or values[-1] < 0:
        raise ValueError(
            f"custom timesteps must lie in [0, {num_train_timesteps}) (the training timesteps), got {values.tolist()}."
        )
    on_grid = set(training_grid(original_inference_steps, num_train_timesteps).tolist())
    off_grid = [int(t) for t in values if int(t) not in on_grid]
    if off_grid:
        logger.warning(
            "custom timesteps %s are not on the LCM distillation grid; expect lower quality.", off_grid
        )
    if len(values) > original_inference_steps:
        logger.warning(
            "%d custom timesteps exceed original_inference_steps=%d.", len(values), original_inference_steps
        )
    keep = min(int(len(values) * strength), len(values))
    if keep == 0:
        raise ValueError(
            f"strength {strength} keeps none of the {len(values)} custom timesteps; raise strength or pass more timesteps."
        )
    return values[len(values) - keep :].copy()


def trailing_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """Descending "trailing" timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", Table 2): round(arange(T, 0, -T/n)) - 1, the spacing diffusers' DDIM/Euler schedulers use with
    ``timestep_spacing="trailing"`` (SDXL-Lightning, Hyper-SD N-step LoRAs).

    When n divides T this is exactly the LCM grid of N = n (4 steps -> [999, 749, 499, 249]).
    """
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be in [1, {num_train_timesteps}] (the training timesteps), got {num_inference_steps}."
        )
    step_ratio = num_train_timesteps / num_inference_steps
    return np.round(np.arange(num_train_timesteps, 0, -step_ratio)).astype(np.int64) - 1


def strength_tail(timesteps: Sequence[int], strength: float) -> np.ndarray:
    """The img2img part of a fixed timestep list: its last int(n * strength) entries (diffusers' img2img rule).

    For adapters distilled on exactly these timesteps (SDXL-Lightning, Hyper-SD, DMD2) img2img can only use a
    tail of them: 4 steps [999, 749, 499, 249] at strength 0.5 -> [499, 249].
    """
    _check_strength(strength)
    values = np.asarray(list(timesteps), dtype=np.int64)
    keep = min(int(len(values) * strength), len(values))
    if keep == 0:
        raise ValueError(
            f"strength {strength} keeps none of the {len(values)} timesteps {values.tolist()} (their last "
            f"int({len(values)} * strength)); use a strength of at least {1 / len(values):g}."
        )
    return values[len(values) - keep :].copy()
