"""``lcm-plugin generate --lora FILE`` samples with the file's recipe, says which, and warns on a wrong step count."""

from __future__ import annotations

import functools
import logging

import pytest
from diffusers import PNDMScheduler
from safetensors.torch import load_file, save_file

from lcm_plugin.adapters import recipe_table
from lcm_plugin.cli import main
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from tests.engine.helpers import tiny_sd_pipeline


@pytest.fixture(scope="module")
def model_and_lora(tmp_path_factory):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("cli")
    config = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False,
                  skip_prk_steps=True, steps_offset=1)  # fmt: skip
    pipe = tiny_sd_pipeline(root, PNDMScheduler(**config))
    pipe.save_pretrained(root / "model")
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(root / "lora", unet_lora_layers=get_peft_model_state_dict(unet))
    return root / "model", load_file(root / "lora" / "pytorch_lora_weights.safetensors")


def _lora(path, tensors, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone() for k, v in tensors.items()}, str(path), metadata=metadata)
    return str(path)


@pytest.fixture
def seen(monkeypatch):
    """The configs and timesteps of every LCMPluginScheduler the command sets up."""
    calls = []
    original = LCMPluginScheduler.set_timesteps

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append((dict(self.config), self.timesteps.tolist()))

    monkeypatch.setattr(LCMPluginScheduler, "set_timesteps", spy)
    return calls


def _generate(model, lora, out, *extra):
    return main(["generate", "--model", str(model), "--lora", lora, "--prompt", "a red circle", "--size", "16",
                 "--out", str(out), *extra])  # fmt: skip


def test_recipe_from_metadata_is_applied(model_and_lora, tmp_path, capsys, seen):
    model, tensors = model_and_lora
    tcd = recipe_table.get("tcd")
    lora = _lora(tmp_path / "mine.safetensors", tensors, {"lcm_plugin.recipe": tcd.to_metadata()})
    assert _generate(model, lora, tmp_path / "a.png") == 0
    out = capsys.readouterr().out
    assert "mine.safetensors: an adapter (by metadata), recipe tcd: TCD, gamma 0.3 on LCM grid N=50" in out
    assert "4 LCM steps, recipe tcd" in out
    config, timesteps = seen[-1]
    assert (config["consistency"], config["gamma"], timesteps) == ("tcd", 0.3, [999, 759, 499, 259])


def test_registry_file_name_recipe_and_wrong_step_warning(model_and_lora, tmp_path, capsys, caplog, seen):
    model, tensors = model_and_lora
    lora = _lora(tmp_path / "sdxl_lightning_4step_lora.safetensors", tensors)  # the upstream file name
    with caplog.at_level(logging.WARNING):
        assert _generate(model, lora, tmp_path / "b.png", "--steps", "6") == 0
    out = capsys.readouterr().out
    assert "registry adapter lightning-sdxl-4step (by file name; its sha256 differs" in out
    assert (
        "recipe lightning-4step: this adapter was distilled for exactly 4 step(s), not 6; use 4 steps"
        in caplog.text
    )
    config, timesteps = seen[-1]
    assert (config["boundary_condition"], config["initial_noise"], timesteps) == (
        False, "sigma_max", [999, 832, 666, 499, 332, 166],
    )  # fmt: skip
    assert _generate(model, lora, tmp_path / "c.png") == 0  # default steps: the recipe's 4
    assert seen[-1][1] == [999, 749, 499, 249]


def test_unknown_lora_is_plain_lcm_with_one_notice_line(model_and_lora, tmp_path, capsys, seen):
    model, tensors = model_and_lora
    lora = _lora(tmp_path / "mystery.safetensors", tensors)
    assert _generate(model, lora, tmp_path / "d.png") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "not a known few-step adapter" in line]
    assert len(lines) == 1 and lines[0].startswith(
        "mystery.safetensors: not a known few-step adapter (sha256 "
    )
    assert "sampling it as plain LCM (recipe lcm-lora)" in lines[0]
    config, timesteps = seen[-1]
    assert (config["consistency"], config["gamma"], timesteps) == ("lcm", 1.0, [999, 759, 499, 259])


def test_recipe_flag_overrides_and_bad_names_fail_early(model_and_lora, tmp_path, capsys, seen):
    model, tensors = model_and_lora
    lora = _lora(tmp_path / "mystery.safetensors", tensors)
    assert _generate(model, lora, tmp_path / "e.png", "--recipe", "hyper-nstep-2", "--gamma", "0.5") == 0
    assert (
        "recipe hyper-nstep-2: DDIM (TCD update, gamma 0) on trailing spacing (999,499)"
        in capsys.readouterr().out
    )
    config, timesteps = seen[-1]
    assert (config["consistency"], config["gamma"], timesteps) == ("tcd", 0.5, [999, 499])
    assert _generate(model, lora, tmp_path / "f.png", "--recipe", "hyper") == 1
    assert "unknown recipe 'hyper'; known recipes: lcm-lora" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
