"""``lcm-plugin timesteps`` and ``lcm-plugin generate`` as a user runs them."""

from __future__ import annotations

import functools

from PIL import Image

from lcm_plugin.cli import main
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from tests.engine.helpers import tiny_sd_pipeline


def test_timesteps_command(capsys):
    assert main(["timesteps", "--steps", "4", "--strength", "0.5"]) == 0
    assert "[499, 379, 259, 139]" in capsys.readouterr().out


def test_timesteps_command_bad_input(capsys):
    assert main(["timesteps", "--steps", "60"]) == 1
    assert "cannot exceed original_inference_steps" in capsys.readouterr().err


def test_generate_from_a_saved_pipeline(tmp_path, capsys):
    from diffusers import DDIMScheduler

    tok = tmp_path / "tok"
    tok.mkdir()
    pipe = tiny_sd_pipeline(tok, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "grid.png"
    code = main(["generate", "--model", str(tmp_path / "model"), "--prompt", "a red circle", "--prompt", "a blue square",
                 "--steps", "2", "--size", "32", "--out", str(out)])
    assert code == 0
    assert Image.open(out).size == (64, 32)
    assert "2 LCM steps" in capsys.readouterr().out
    assert isinstance(LCMPluginScheduler.from_config(pipe.scheduler.config), LCMPluginScheduler)


def test_generate_at_explicit_timesteps(tmp_path, capsys, monkeypatch):
    from diffusers import DDIMScheduler

    tok = tmp_path / "tok"
    tok.mkdir()
    pipe = tiny_sd_pipeline(tok, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
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
