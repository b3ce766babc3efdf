"""The toy world: a deterministic procedural generator of captioned 32x32 images with known ground truth.

A scene is either one object (shape, colour, size, position) or two objects in a spatial relation
("a red circle left of a blue square"), on a plain background. Every sample is a pure function of
``(split, index, WorldConfig)``: no global RNG, so splits are reproducible anywhere.

Splits: ``train``, ``val`` and ``test`` draw from the same attribute distribution (with different seeds);
``heldout`` only contains objects whose (colour, shape) combination never occurs in the other splits,
which measures compositional generalisation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.65, 0.20, 0.80),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUNDS = {"black": (0.05, 0.05, 0.05), "gray": (0.50, 0.50, 0.50), "white": (0.95, 0.95, 0.95)}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
# Relation axis of a two-object scene; object 1 is always the left (horizontal) or upper (vertical) one.
AXES = ("horizontal", "vertical")
SPLITS = ("train", "val", "test", "heldout")
# (colour, shape) combinations that never appear in train/val/test.
DEFAULT_HELDOUT = (("purple", "triangle"), ("yellow", "cross"), ("green", "circle"))

_SIZE_RADIUS = {"small": 5.0, "large": 9.0}
_PAIR_RADIUS = 5.5
_POSITION_CENTRE = {
    "left": (9.0, 16.0),
    "right": (23.0, 16.0),
    "top": (16.0, 9.0),
    "bottom": (16.0, 23.0),
    "center": (16.0, 16.0),
}
_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POS_PHRASE = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "center": ("in the center", "in the middle"),
}


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image. For one object only ``shape1``/``colour1``/``size``/``position`` are set;
    for two objects ``axis``/``shape2``/``colour2`` are set too (object 1 is the left or upper one)."""

    n_objects: int
    background: str
    shape1: str
    colour1: str
    size: str | None = None
    position: str | None = None
    axis: str | None = None
    shape2: str | None = None
    colour2: str | None = None

    def labels(self) -> dict[str, int]:
        """Integer class labels per judge head; -1 where the head does not apply to this scene."""
        return {
            "count": self.n_objects - 1,
            "background": BACKGROUND_NAMES.index(self.background),
            "shape1": SHAPES.index(self.shape1),
            "colour1": COLOUR_NAMES.index(self.colour1),
            "size": SIZES.index(self.size) if self.size else -1,
            "position": POSITIONS.index(self.position) if self.position else -1,
            "axis": AXES.index(self.axis) if self.axis else -1,
            "shape2": SHAPES.index(self.shape2) if self.shape2 else -1,
            "colour2": COLOUR_NAMES.index(self.colour2) if self.colour2 else -1,
        }


@dataclass(frozen=True)
class WorldConfig:
    """Settings of the toy world.

    Args:
        resolution: image side in pixels (only 32 is supported by the shipped models).
        pair_fraction: probability that a scene has two objects in a relation.
        heldout: (colour, shape) combinations reserved for the ``heldout`` split.
        seed: base seed; every split and index derives its own seed from it.
        jitter: maximum random offset of an object's centre, in pixels.
        noise_std: standard deviation of per-pixel background texture noise (0..1 image units).
    """

    resolution: int = 32
    pair_fraction: float = 0.3
    heldout: tuple[tuple[str, str], ...] = field(default=DEFAULT_HELDOUT)
    seed: int = 0
    jitter: float = 2.0
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        if self.resolution != 32:
            raise ValueError(
                f"resolution must be 32 (got {self.resolution}); the toy world is drawn at 32x32"
            )
        if not 0.0 <= self.pair_fraction <= 1.0:
            raise ValueError(f"pair_fraction must be in [0, 1], got {self.pair_fraction}")
        for colour, shape in self.heldout:
            if colour not in COLOURS or shape not in SHAPES:
                raise ValueError(
                    f"held-out combination {(colour, shape)} must use colours {COLOUR_NAMES} and shapes {SHAPES}"
                )
        if len(self.heldout) >= len(COLOURS) * len(SHAPES):
            raise ValueError("heldout must leave at least one (colour, shape) combination for training")
        if self.jitter < 0 or self.noise_std < 0:
            raise ValueError("jitter and noise_std must be >= 0")


def _rng(config: WorldConfig, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    digest = hashlib.sha256(f"{config.seed}/{split}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _objects(config: WorldConfig, heldout: bool) -> list[tuple[str, str]]:
    held = set(config.heldout)
    return [(c, s) for c in COLOUR_NAMES for s in SHAPES if ((c, s) in held) == heldout]


def sample_scene(config: WorldConfig, split: str, index: int) -> tuple[Scene, np.random.Generator]:
    """Draw the scene of sample ``index`` of ``split``; also returns the sample's generator for rendering."""
    rng = _rng(config, split, index)
    is_held = split == "heldout"
    pool, seen = _objects(config, is_held), _objects(config, False)
    background = BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))]
    if rng.random() < config.pair_fraction:
        axis = AXES[rng.integers(2)]
        first = pool[rng.integers(len(pool))]
        # In the held-out split the second object may be any object; only one needs to be novel.
        second_pool = seen + pool if is_held else pool
        second = second_pool[rng.integers(len(second_pool))]
        while second == first:
            second = second_pool[rng.integers(len(second_pool))]
        if is_held and rng.random() < 0.5:
            first, second = second, first
        scene = Scene(2, background, first[1], first[0], axis=axis, shape2=second[1], colour2=second[0])
    else:
        colour, shape = pool[rng.integers(len(pool))]
        scene = Scene(
            1, background, shape, colour, size=SIZES[rng.integers(2)], position=POSITIONS[rng.integers(5)]
        )
    return scene, rng


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A plain-English caption of ``scene`` with randomly chosen phrasing (all attributes are mentioned)."""
    bg = f"on a {scene.background} background"
    if scene.n_objects == 1:
        size = _SYNONYMS[scene.size][rng.integers(len(_SYNONYMS[scene.size]))]
        pos = _POS_PHRASE[scene.position][rng.integers(2)]
        obj = f"{size} {scene.colour1} {scene.shape1}"
        templates = (
            f"a {obj} {pos} {bg}",
            f"a {obj} {pos}, {scene.background} background",
            f"a {scene.background} background with a {obj} {pos}",
        )
        return templates[rng.integers(len(templates))]
    a, b = f"{scene.colour1} {scene.shape1}", f"{scene.colour2} {scene.shape2}"
    forward, backward = ("left of", "right of") if scene.axis == "horizontal" else ("above", "below")
    if rng.random() < 0.5:
        rel = (
            f"a {a} {forward} a {b}"
            if forward == "above" or rng.random() < 0.5
            else f"a {a} to the {forward} a {b}"
        )
    else:
        rel = (
            f"a {b} {backward} a {a}"
            if backward == "below" or rng.random() < 0.5
            else f"a {b} to the {backward} a {a}"
        )
    return f"{rel} {bg}" if rng.random() < 0.7 else f"{rel}, {scene.background} background"


def _mask(shape: str, cx: float, cy: float, r: float, res: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage mask (res x res, values in [0, 1]) of one shape."""
    n = res * supersample
    coords = (np.arange(n) + 0.5) / supersample
    x, y = np.meshgrid(coords, coords)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        m = dx**2 + dy**2 <= r**2
    elif shape == "square":
        s = r * 0.85
        m = (np.abs(dx) <= s) & (np.abs(dy) <= s)
    elif shape == "triangle":
        # Upward triangle: apex at top, base at bottom.
        t = (dy + r) / (2 * r)
        m = (dy >= -r) & (dy <= r * 0.8) & (np.abs(dx) <= t * r * 1.1)
    elif shape == "cross":
        w = r * 0.35
        m = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")
    return m.reshape(res, supersample, res, supersample).mean(axis=(1, 3))


def render(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> np.ndarray:
    """Draw ``scene`` as a float32 HxWx3 array in [0, 1]."""
    res = config.resolution
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32) + rng.uniform(-0.04, 0.04)
    img = np.broadcast_to(bg, (res, res, 3)).copy()
    img += rng.normal(0.0, config.noise_std, size=(res, res, 1)).astype(np.float32)
    jit = lambda: rng.uniform(-config.jitter, config.jitter)  # noqa: E731
    if scene.n_objects == 1:
        cx, cy = _POSITION_CENTRE[scene.position]
        items = [
            (
                scene.shape1,
                scene.colour1,
                cx + jit(),
                cy + jit(),
                _SIZE_RADIUS[scene.size] * rng.uniform(0.9, 1.1),
            )
        ]
    else:
        off = 7.5
        dx, dy = jit(), jit()
        if scene.axis == "horizontal":
            (x1, y1), (x2, y2) = (16 - off + dx * 0.5, 16 + dy), (16 + off + dx * 0.5, 16 + dy)
        else:
            (x1, y1), (x2, y2) = (16 + dx, 16 - off + dy * 0.5), (16 + dx, 16 + off + dy * 0.5)
        items = [
            (scene.shape1, scene.colour1, x1, y1, _PAIR_RADIUS),
            (scene.shape2, scene.colour2, x2, y2, _PAIR_RADIUS),
        ]
    for shape, colour, cx, cy, r in items:
        m = _mask(shape, cx, cy, r, res)[..., None]
        col = np.clip(np.array(COLOURS[colour], dtype=np.float32) + rng.uniform(-0.05, 0.05, size=3), 0, 1)
        img = img * (1 - m) + col * m
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample(config: WorldConfig, split: str, index: int) -> tuple[np.ndarray, str, Scene]:
    """Image (HxWx3 float32 in [0, 1]), caption and ground-truth scene of sample ``index`` of ``split``."""
    scene, rng = sample_scene(config, split, index)
    text = caption(scene, rng)
    return render(scene, rng, config), text, scene


def iterate(
    config: WorldConfig, split: str, count: int, start: int = 0
) -> Iterator[tuple[np.ndarray, str, Scene]]:
    """Yield ``count`` consecutive samples of ``split`` starting at ``start``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    for i in range(start, start + count):
        yield sample(config, split, i)


def make_arrays(
    config: WorldConfig, split: str, count: int, start: int = 0
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``count`` samples as one uint8 array (N, 3, H, W) plus captions and scenes."""
    images, captions, scenes = [], [], []
    for img, text, scene in iterate(config, split, count, start):
        images.append(np.round(img.transpose(2, 0, 1) * 255).astype(np.uint8))
        captions.append(text)
        scenes.append(scene)
    if not images:
        return np.zeros((0, 3, config.resolution, config.resolution), np.uint8), [], []
    return np.stack(images), captions, scenes
