"""``lcm-plugin timesteps`` and ``lcm-plugin generate`` as a user runs them."""

from __future__ import annotations

import functools

import numpy as np
import torch
from diffusers import LCMScheduler
from PIL import Image

from lcm_plugin.cli import main
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from tests.engine.helpers import tiny_sd_pipeline


def test_timesteps_command(capsys):
    assert main(["timesteps", "--steps", "4", "--strength", "0.5"]) == 0
    assert "[499, 379, 259, 139]" in capsys.readouterr().out


def test_timesteps_command_takes_the_grid_size_under_its_one_name(capsys):
    assert main(["timesteps", "--steps", "2", "--original-inference-steps", "20"]) == 0
    assert "[999, 499]" in capsys.readouterr().out  # N = 20: k = 50
    assert main(["timesteps", "--steps", "2", "--original-steps", "20"]) == 0  # the old spelling, hidden
    captured = capsys.readouterr()
    assert "[999, 499]" in captured.out
    assert "--original-steps is the old name of --original-inference-steps" in captured.err


def test_timesteps_command_bad_input(capsys):
    assert main(["timesteps", "--steps", "60"]) == 1
    assert "cannot exceed original_inference_steps" in capsys.readouterr().err


def test_generate_from_a_saved_pipeline(tmp_path, capsys):
    from diffusers import DDIMScheduler

    tok = tmp_path / "tok"
    tok.mkdir()
    pipe = tiny_sd_pipeline(
        tok, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    )
    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "grid.png"
    code = main(
        [
            "generate",
            "--model",
            str(tmp_path / "model"),
            "--prompt",
            "a red circle",
            "--prompt",
            "a blue square",
            "--steps",
            "2",
            "--size",
            "32",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "2 LCM steps" in capsys.readouterr().out
    # the grid is what diffusers' own LCMScheduler gives in the same pipeline (the independent reference)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(["a red circle", "a blue square"], num_inference_steps=2, guidance_scale=1.0, height=32, width=32,
               generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    with Image.open(out) as im:
        got = np.asarray(im.convert("RGB"), dtype=np.int16)
    want = np.concatenate(list((ref * 255).round().astype(np.int16)), axis=1)  # two columns, one row
    assert got.shape == want.shape == (32, 64, 3)
    assert np.abs(got - want).max() <= 1  # 8-bit rounding of values equal to 1e-6


def test_generate_at_explicit_timesteps(tmp_path, capsys, monkeypatch):
    from diffusers import DDIMScheduler

    tok = tmp_path / "tok"
    tok.mkdir()
    pipe = tiny_sd_pipeline(
        tok, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    )
    pipe.save_pretrained(tmp_path / "model")
    seen = []
    original = LCMPluginScheduler.set_timesteps

    @functools.wraps(original)  # keeps the signature diffusers inspects for `timesteps`
    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.timesteps.tolist())

    monkeypatch.setattr(LCMPluginScheduler, "set_timesteps", spy)
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a red circle", "--size", "32"]
    assert main(args + ["--timesteps", "999,899,749,549", "--out", str(tmp_path / "a.png")]) == 0
    assert seen[-1] == [999, 899, 749, 549]
    assert "4 LCM steps at timesteps [999, 899, 749, 549]" in capsys.readouterr().out
    assert main(args + ["--timesteps", "499,999"]) == 1
    assert "strictly descending" in capsys.readouterr().err
    assert main(args + ["--timesteps", "999,,x"]) == 1
    assert "comma-separated integers" in capsys.readouterr().err


def test_generate_refuses_missing_and_pickled_models(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04")
    assert main(["generate", "--model", str(ckpt), "--prompt", "x"]) == 1
    assert "only .safetensors single-file checkpoints" in capsys.readouterr().err


def test_generate_loads_our_own_single_file_checkpoint_offline(tmp_path, capsys, monkeypatch):
    """`train fuse --single-file` output (the original layout) is usable by `generate`, with no download."""
    import numpy as np

    from lora_training.single_file import save_single_file
    from tests.training.helpers import RES, save_tiny_pipeline, tiny_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny_pipeline(tmp_path / "folder")
    ckpt = save_single_file(tiny_pipeline(), tmp_path / "model.safetensors", arch="sd15")
    common = ["--prompt", "a red square", "--steps", "2", "--size", str(RES), "--threads", "1"]
    assert main(["generate", "--model", str(folder), *common, "--out", str(tmp_path / "a.png")]) == 0
    argv = ["generate", "--model", str(ckpt), "--single-file-config", str(folder), *common]
    assert main([*argv, "--out", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "ab")
    # the file holds the folder's weights bit for bit
    assert a.shape == (RES, RES, 3) and np.array_equal(a, b)
    capsys.readouterr()
    assert main(["generate", "--model", str(ckpt), *common, "--out", str(tmp_path / "c.png")]) == 1
    assert "pass single_file_config (--single-file-config DIR)" in capsys.readouterr().err


def test_generate_threads_flag(tmp_path, monkeypatch):
    import torch
    from diffusers import DDIMScheduler

    tok = tmp_path / "tok"
    tok.mkdir()
    pipe = tiny_sd_pipeline(
        tok, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    )
    pipe.save_pretrained(tmp_path / "model")
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "x", "--steps", "1", "--size", "32"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0 and calls == []  # default: torch's own choice
    assert main([*args, "--threads", "3", "--out", str(tmp_path / "b.png")]) == 0 and calls == [3]
