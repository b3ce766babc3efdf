"""The toy world: determinism, split disjointness (incl. held-out combinations), captions, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from lcm_plugin.toy import world

CFG = world.WorldConfig()


def _objects(scene: world.Scene) -> set[tuple[str, str]]:
    objs = {(scene.colour1, scene.shape1)}
    if scene.n_objects == 2:
        objs.add((scene.colour2, scene.shape2))
    return objs


def test_same_index_gives_identical_sample():
    a_img, a_cap, a_scene = world.sample(CFG, "train", 123)
    b_img, b_cap, b_scene = world.sample(world.WorldConfig(), "train", 123)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap and a_scene == b_scene
    assert (
        a_img.shape == (32, 32, 3) and a_img.dtype == np.float32 and 0.0 <= a_img.min() and a_img.max() <= 1.0
    )


def test_seed_changes_the_world():
    assert not np.array_equal(
        world.sample(CFG, "train", 0)[0], world.sample(world.WorldConfig(seed=1), "train", 0)[0]
    )


def test_splits_are_disjoint():
    hashes = {}
    for split in world.SPLITS:
        arrays, _, _ = world.make_arrays(CFG, split, 300)
        hashes[split] = {hashlib.sha1(a.tobytes()).hexdigest() for a in arrays}
        assert len(hashes[split]) == 300, f"duplicate images inside {split}"
    for i, a in enumerate(world.SPLITS):
        for b in world.SPLITS[i + 1 :]:
            assert not hashes[a] & hashes[b], f"{a} and {b} share images"


def test_heldout_combinations_only_in_heldout_split():
    held = set(CFG.heldout)
    for split in ("train", "val", "test"):
        for i in range(1500):
            assert not _objects(world.sample_scene(CFG, split, i)[0]) & held, (
                f"{split}[{i}] uses a held-out combination"
            )
    for i in range(300):
        assert _objects(world.sample_scene(CFG, "heldout", i)[0]) & held


def test_all_attribute_values_occur_in_train():
    scenes = [world.sample_scene(CFG, "train", i)[0] for i in range(2000)]
    assert {s.shape1 for s in scenes} == set(world.SHAPES)
    assert {s.colour1 for s in scenes} == set(world.COLOUR_NAMES)
    assert {s.position for s in scenes if s.position} == set(world.POSITIONS)
    assert {s.axis for s in scenes if s.axis} == set(world.AXES)
    assert 0.2 < np.mean([s.n_objects == 2 for s in scenes]) < 0.4


def test_captions_mention_every_attribute():
    for i in range(300):
        _, text, scene = world.sample(CFG, "train", i)
        words = text.replace(",", " ").split()
        for value in (scene.background, scene.colour1, scene.shape1, scene.colour2, scene.shape2):
            if value:
                assert value in words, (text, scene)
        if scene.n_objects == 2:
            assert any(r in text for r in ("left of", "right of", "above", "below"))
            # Object 1 is the left/upper one whatever the phrasing.
            first = f"{scene.colour1} {scene.shape1}"
            second = f"{scene.colour2} {scene.shape2}"
            if f"{first} above" in text or f"{first} left of" in text or f"{first} to the left of" in text:
                continue
            assert f"{second} below" in text or "right of" in text, text


def test_object_positions_match_labels():
    """Independent check of the renderer: the object's colour mass lies where the label says."""
    for i in range(200):
        img, _, scene = world.sample(CFG, "train", i)
        if scene.n_objects != 1:
            continue
        colour = np.array(world.COLOURS[scene.colour1])
        mask = np.abs(img - colour).sum(-1) < 0.25
        ys, xs = np.nonzero(mask)
        cx, cy = xs.mean(), ys.mean()
        expected = {
            "left": (cx < 13),
            "right": (cx > 19),
            "top": (cy < 13),
            "bottom": (cy > 19),
            "center": abs(cx - 16) < 4 and abs(cy - 16) < 4,
        }
        assert expected[scene.position], (scene, cx, cy)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 64}, "resolution must be 32"),
        ({"pair_fraction": 1.5}, "pair_fraction"),
        ({"heldout": (("pink", "circle"),)}, "held-out combination"),
        ({"jitter": -1.0}, "jitter"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        world.WorldConfig(**kwargs)


def test_bad_split_or_index_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        world.sample(CFG, "training", 0)
    with pytest.raises(ValueError, match="index must be >= 0"):
        world.sample(CFG, "train", -1)


def test_toy_dataset_matches_the_world():
    from lcm_plugin.toy.data import ToyDataset

    ds = ToyDataset("train", length=4, start=10)
    item = ds[2]
    img, text, _ = world.sample(CFG, "train", 12)
    assert item["text"] == text and item["pixel_values"].shape == (3, 32, 32)
    assert np.allclose((item["pixel_values"].numpy().transpose(1, 2, 0) + 1) / 2, img, atol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(ValueError, match="unknown split"):
        ToyDataset("nope")
