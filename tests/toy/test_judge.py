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


def _torchmetrics_kid(real_features, fake_features, subset, seed=0):
    """The KID the harness used before: torchmetrics' independent real/fake subset draws (global RNG)."""
    from torchmetrics.image.kid import poly_mmd

    torch.manual_seed(seed)
    n = len(real_features)
    scores = [
        poly_mmd(real_features[torch.randperm(n)[:subset]], fake_features[torch.randperm(n)[:subset]])
        for _ in range(100)
    ]
    return float(torch.stack(scores).mean())


def test_kid_of_a_perfect_paired_generator_is_zero_not_negative(judge):
    """Real test images vs an independent re-render of the same scenes (one perfect generator, rows paired by prompt):
    prompt-disjoint subsets read ~0; independent draws (torchmetrics) put same-prompt pairs in the cross term."""
    from lcm_plugin.toy.evaluate import second_render
    from lcm_plugin.toy.judge import JudgeFeatures, kid

    features = JudgeFeatures(judge)
    real, _, _ = real_images("test", 64)
    with torch.no_grad():
        fr, fo = features(real), features(second_render("test", 64)[0])
    mean, std = kid(fr, fo, subset_size=50)
    assert abs(mean) < 0.25 * std, (mean, std)  # measured: 0.005 +- 0.38 (BENCHMARKS.md, toy world)
    assert _torchmetrics_kid(fr, fo, 50) < -std, "the pairing bias this estimator removes"


def test_kid_subsets_never_share_a_prompt(monkeypatch):
    import torchmetrics.image.kid as tm_kid

    from lcm_plugin.toy.judge import kid

    seen = []
    real_mmd = tm_kid.poly_mmd

    def spy(a, b):
        seen.append((set(a[:, 0].long().tolist()), set(b[:, 0].long().tolist())))
        return real_mmd(a, b)

    monkeypatch.setattr(tm_kid, "poly_mmd", spy)
    rows = torch.arange(10, dtype=torch.float64)[:, None].repeat(1, 4)  # column 0 = the prompt index
    kid(rows, rows.clone(), subset_size=50, subsets=20)
    assert len(seen) == 20 and all(len(r) == len(f) == 5 and not r & f for r, f in seen)  # capped at n // 2
    with pytest.raises(ValueError, match="two paired feature sets of the same size >= 4"):
        kid(rows[:3], rows[:3])
    with pytest.raises(ValueError, match="same size"):
        kid(rows, rows[:8])


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
    with pytest.raises(ValueError, match="n_samples must be >= 4 .*KID two prompt-disjoint halves"):
        EvalConfig(n_samples=3)
