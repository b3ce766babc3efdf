"""An adapter file gets its recipe from its metadata, its sha256 (the registry) or its registry file name; anything
else is plain LCM with a one-line notice."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from safetensors.torch import save_file

from lcm_plugin.adapters import recipe_table, recognition
from lcm_plugin.adapters.registry import KnownAdapter


def _lora(path, value=0.0, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.full((4, 32), value),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_sha256_of_a_registry_file_selects_its_recipe(tmp_path, monkeypatch):
    path = _lora(tmp_path / "my-renamed-file.safetensors", 1.0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = KnownAdapter("hyper-sdxl-4step", "ByteDance/Hyper-SD", "Hyper-SDXL-4steps-lora.safetensors", "sdxl",
                         "lora", sha256=digest)  # fmt: skip
    monkeypatch.setattr(recognition, "every_adapter", lambda: [entry])
    found = recognition.recognise(path)
    assert (found.how, found.entry.name, found.recipe.name) == ("sha256", "hyper-sdxl-4step", "hyper-nstep-4")
    assert found.notice() == (
        "my-renamed-file.safetensors: registry adapter hyper-sdxl-4step (by sha256), recipe hyper-nstep-4: "
        "DDIM (TCD update, gamma 0) on trailing spacing (999,749,499,249); steps 4; CFG 1; LoRA scale 1"
    )


def test_recipe_in_the_metadata_wins(tmp_path):
    tcd = recipe_table.get("tcd")
    path = _lora(tmp_path / "self.safetensors", metadata={"lcm_plugin.recipe": tcd.to_metadata()})
    found = recognition.recognise(path)
    assert found.how == "metadata" and found.recipe.engine_options() == tcd.engine_options()
    legacy = _lora(tmp_path / "old.safetensors", metadata={"lcm_plugin.num_ddim_timesteps": "25"})
    found = recognition.recognise(legacy)
    assert found.recipe.original_inference_steps == 25 and found.recipe.timesteps_for(4) == [
        999,
        759,
        519,
        279,
    ]


def test_registry_file_name_is_a_weaker_match_and_says_so(tmp_path):
    found = recognition.recognise(_lora(tmp_path / "Hyper-SD15-8steps-lora.safetensors"))
    assert (found.how, found.entry.name, found.recipe.name) == (
        "file name",
        "hyper-sd15-8step",
        "hyper-nstep-8",
    )
    assert "its sha256 differs from the registry's: another revision or a modified copy?" in found.notice()
    ours = recognition.recognise(
        _lora(tmp_path / "lightning-sdxl-8step.safetensors")
    )  # what our download installs
    assert ours.recipe.name == "lightning-8step"
    # upstream names several entries share say nothing
    assert not recognition.recognise(_lora(tmp_path / "x" / "pytorch_lora_weights.safetensors")).known


def test_unknown_adapter_is_plain_lcm_with_a_one_line_notice(tmp_path):
    path = _lora(tmp_path / "mystery.safetensors", 3.0)
    found = recognition.recognise(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert not found.known and found.recipe.name == "lcm-lora"
    assert found.notice() == (
        f"mystery.safetensors: not a known few-step adapter (sha256 {digest[:12]}..., no lcm_plugin.recipe "
        "metadata); sampling it as plain LCM (recipe lcm-lora). If it is a TCD / Hyper-SD / PCM / SDXL-Lightning / "
        "DMD2 file, pick its recipe explicitly (`lcm-plugin adapters list` shows them)."
    )
    assert "\n" not in found.notice()


def test_folders_and_bad_paths(tmp_path):
    folder = tmp_path / "run"
    _lora(folder / "pytorch_lora_weights.safetensors", metadata={"lcm_plugin.num_ddim_timesteps": "50"})
    _lora(folder / "lcm_lora_kohya.safetensors")
    assert recognition.recognise(folder).how == "metadata"
    (tmp_path / "two").mkdir()
    _lora(tmp_path / "two" / "a.safetensors")
    _lora(tmp_path / "two" / "b.safetensors")
    with pytest.raises(
        ValueError, match=r"is a folder with 2 .safetensors files; pass the adapter file itself"
    ):
        recognition.recognise(tmp_path / "two")
    with pytest.raises(ValueError, match=r"adapter .*nope.safetensors does not exist"):
        recognition.recognise(tmp_path / "nope.safetensors")
    pickle = tmp_path / "bad.safetensors"
    pickle.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(ValueError):
        recognition.recognise(pickle)


def test_diffusers_helper_logs_the_notice_for_an_unknown_file(tmp_path, caplog):
    from lcm_plugin.recipes_diffusers import resolve_recipe

    path = _lora(tmp_path / "mystery.safetensors", 2.0)
    with caplog.at_level(logging.WARNING, logger="lcm_plugin.recipes_diffusers"):
        assert resolve_recipe(path).name == "lcm-lora"
    assert "mystery.safetensors: not a known few-step adapter" in caplog.text
    with pytest.raises(ValueError, match=r"unknown recipe 'no-such'; known recipes: lcm-lora"):
        resolve_recipe("no-such")
