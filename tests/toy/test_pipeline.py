"""The shipped toy teacher is a standard SD pipeline folder that loads offline and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lcm_plugin.toy import models, paths


def test_loads_with_stock_from_pretrained_offline(teacher_path):
    """Load in a fresh process with HF_HUB_OFFLINE=1 using only diffusers' own API."""
    code = (
        "import torch, diffusers;"
        f"p = diffusers.StableDiffusionPipeline.from_pretrained({str(teacher_path)!r}, safety_checker=None, requires_safety_checker=False);"
        "p.set_progress_bar_config(disable=True);"
        "im = p('a red circle on the left on a black background', num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type='np').images;"
        "print(type(p.unet).__name__, type(p.vae).__name__, type(p.text_encoder).__name__, type(p.tokenizer).__name__, im.shape)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UNet2DConditionModel AutoencoderKL CLIPTextModel CLIPTokenizer (1, 32, 32, 3)" in out.stdout


def test_schedule_is_sd(teacher_pipe):
    cfg = teacher_pipe.scheduler.config
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type"):
        assert cfg[key] == models.SD_SCHEDULE[key], key
    assert teacher_pipe.tokenizer.model_max_length == 77


def test_generation_is_seeded(teacher_pipe):
    def run(seed, **kw):
        return teacher_pipe(
            ["a blue square at the top on a gray background"],
            num_inference_steps=2,
            generator=[torch.Generator().manual_seed(seed)],
            output_type="pt",
            **kw,
        ).images

    a, b = run(0), run(0)
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b)
    # the seed is the starting noise: seed 1's image is the one from seed 1's first draw passed as latents
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    assert torch.equal(run(1), run(5, latents=latents))


def test_shipped_assets_are_small():
    total = sum(
        f.stat().st_size for f in paths.ASSETS.rglob("*") if f.is_file() and "lcm_lora" not in f.parts
    )
    assert total <= 25 * 2**20, f"shipped toy assets are {total / 2**20:.1f} MiB"
    assert not list(paths.ASSETS.rglob("*.bin")) and not list(paths.ASSETS.rglob("*.pt")), (
        "ship safetensors only"
    )


def test_weights_are_fp16_safetensors(teacher_path):
    from safetensors import safe_open

    for part in ("unet", "vae", "text_encoder"):
        files = list((teacher_path / part).glob("*.safetensors"))
        assert files, part
        with safe_open(str(files[0]), framework="pt") as fh:
            assert fh.get_tensor(next(iter(fh.keys()))).dtype == torch.float16
        assert json.loads((teacher_path / part / "config.json").read_text())


def test_missing_pipeline_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        models.load_pipeline(tmp_path)


def test_tiny_training_run_writes_a_loadable_pipeline(tmp_path):
    from lcm_plugin.toy.configs import TeacherConfig
    from lcm_plugin.toy.teacher import train_teacher

    cfg = TeacherConfig(
        n_train=32,
        vae_steps=2,
        vae_batch=4,
        unet_steps=2,
        unet_batch=4,
        save_every=1,
        warmup=1,
        decoder_steps=2,
    )
    out = train_teacher(tmp_path / "t", cfg)
    pipe = models.load_pipeline(out)
    assert pipe.vae.config.scaling_factor > 0 and pipe.unet.config.sample_size == 8
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        TeacherConfig(warmup=0)


def test_training_device_is_checked_before_any_work(tmp_path):
    import torch

    from lcm_plugin.toy.configs import TeacherConfig
    from lcm_plugin.toy.teacher import train_teacher

    with pytest.raises(RuntimeError):  # torch's own message for a device name it does not know
        train_teacher(tmp_path / "t", TeacherConfig(device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible.*--device cpu"):
            train_teacher(tmp_path / "t", TeacherConfig(device="cuda"))
    assert not (tmp_path / "t").exists()


def test_cosine_schedule_and_pair_fraction_settings(tmp_path, monkeypatch):
    from lcm_plugin.toy import teacher
    from lcm_plugin.toy.configs import TeacherConfig

    cfg = TeacherConfig(unet_lr=1e-3, warmup=10, unet_steps=110, lr_schedule="cosine")
    lrs = [teacher.unet_lr_at(cfg, s) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(5e-4) and lrs[109] < 1e-6
    assert all(b <= a for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    flat = TeacherConfig(unet_lr=1e-3, warmup=10, unet_steps=110)
    assert teacher.unet_lr_at(flat, 109) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        TeacherConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="pair_fraction must be in"):
        TeacherConfig(pair_fraction=1.2)

    seen = {}

    def fake_make_arrays(world_cfg, split, count):
        seen.update(pair_fraction=world_cfg.pair_fraction, split=split, count=count)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(teacher.world, "make_arrays", fake_make_arrays)
    with pytest.raises(KeyboardInterrupt):
        teacher.train_teacher(tmp_path / "t", TeacherConfig(n_train=8, pair_fraction=0.75))
    assert seen == {"pair_fraction": 0.75, "split": "train", "count": 8}
