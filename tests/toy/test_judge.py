"""The shipped judge: checker accuracy on real held-out images, FD/KID sanity, bad files."""

from __future__ import annotations

import pytest
import torch

from lcm_plugin.toy import world
from lcm_plugin.toy.evaluate import EvalConfig, _Metrics
from lcm_plugin.toy.judge import adherence, load_judge
from lcm_plugin.toy.judge_train import real_images

N = 256


def test_checker_is_at_least_99_percent_right_on_real_heldout_images(judge):
    for split in ("test", "heldout"):
        images, scenes, _ = real_images(split, 1000)
        acc = adherence(judge, images, scenes)
        assert acc["all"] >= 0.99, (split, acc)


@pytest.fixture(scope="module")
def fd_setup(judge):
    torch.set_num_threads(1)
    real, _, _ = real_images("test", N)
    metrics = _Metrics(judge, real, kid_subset=50)
    other, scenes, _ = real_images("val", N)
    return metrics, other, scenes


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256.0
    return torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5), groups=3
    )


def test_fd_and_kid_rise_with_blur_noise_and_a_dropped_mode(fd_setup):
    metrics, other, scenes = fd_setup
    base_fd, base_kid, _ = metrics(other)
    gen = torch.Generator().manual_seed(0)
    noisy = (other + 0.15 * torch.randn(other.shape, generator=gen)).clamp(0, 1)
    # Dropped mode: every two-object image replaced by a one-object image (the pair mode vanishes).
    singles = [i for i, s in enumerate(scenes) if s.n_objects == 1]
    dropped = other[torch.tensor([singles[i % len(singles)] for i in range(len(scenes))])]
    # Minimum FD ratios over the real-vs-real baseline (measured at N=256: blur x2 ~1.5, noise ~1.7, drop ~2.9).
    for name, images, ratio in (
        ("blur", _blur(_blur(other)), 1.2),
        ("noise", noisy, 1.4),
        ("dropped mode", dropped, 2.0),
    ):
        fd, kid, _ = metrics(images)
        assert fd > ratio * base_fd and kid > base_kid + 0.02, (name, fd, base_fd, kid, base_kid)


def test_fd_of_a_set_with_itself_is_near_zero(judge):
    real, _, _ = real_images("test", 64)
    metrics = _Metrics(judge, real, kid_subset=32)
    fd, _, _ = metrics(real)
    assert abs(fd) < 1e-3


def test_adherence_detects_wrong_captions(judge):
    images, scenes, _ = real_images("test", 200)
    shuffled = scenes[1:] + scenes[:1]
    assert adherence(judge, images, shuffled)["all"] < 0.2


def test_bad_judge_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-judge"):
        load_judge(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors judge file"):
        load_judge(bad)


def test_adherence_rejects_mismatched_lengths(judge):
    with pytest.raises(ValueError, match="one scene per image"):
        adherence(judge, torch.zeros(2, 3, 32, 32), [world.sample_scene(world.WorldConfig(), "test", 0)[0]])
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        EvalConfig(n_samples=1)
