"""Inspection: formats, base architecture from names and shapes, and refusal of unsafe or broken files."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lcm_plugin.adapters import safetensors_io
from lcm_plugin.adapters.convert import (
    adapter_from_state_dict,
    convert_file,
    to_diffusers_state_dict,
    to_kohya_state_dict,
)
from lcm_plugin.adapters.inspection import inspect_file


def _write(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _kohya(peft_sd, arch, alpha=8.0, layout="auto"):
    adapter = adapter_from_state_dict(peft_sd)
    for mod in adapter.modules.values():
        mod.alpha = torch.tensor(alpha)
    return to_kohya_state_dict(adapter, arch, layout)


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_inspect_kohya_sd15(tmp_path, sd15_lora, layout):
    tensors, meta = _kohya(sd15_lora[1], "sd15", layout=layout)
    report = inspect_file(_write(tmp_path, "a.safetensors", tensors, meta))
    assert (report.format, report.layout, report.arch.name) == ("kohya", layout, "sd15")
    assert report.modules == {"unet": 278} and report.ranks == {4: 278} and report.alphas == {8.0: 278}
    assert report.targets["upsamplers.0.conv"] == 3 and report.targets["to_out.0"] == 32
    assert report.parameters == sum(v.numel() for v in sd15_lora[1].values())
    assert report.metadata["ss_base_model_version"] == "sd_v1"


def test_inspect_diffusers_peft_and_comfyui_namings(tmp_path, sd15_lora):
    peft_sd = sd15_lora[1]
    dif, meta = to_diffusers_state_dict(adapter_from_state_dict(peft_sd))
    assert inspect_file(_write(tmp_path, "d.safetensors", dif, meta)).format == "diffusers"
    raw = {f"base_model.model.{k}": v for k, v in peft_sd.items()}
    report = inspect_file(_write(tmp_path, "p.safetensors", raw))
    assert (report.format, report.arch.name, report.alphas) == ("peft", "sd15", {4.0: 278})
    comfy = {
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_up.weight": torch.zeros(16, 2),
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_down.weight": torch.zeros(
            2, 768
        ),
    }
    report = inspect_file(_write(tmp_path, "c.safetensors", comfy))
    assert (report.format, report.layout, report.arch.name) == ("comfyui", "ldm", "sd15")


@pytest.mark.parametrize("ctx, arch", [(768, "sd15"), (1024, "sd2")])
def test_context_dim_tells_sd1_from_sd2(tmp_path, sd15_lora, ctx, arch):
    tensors, _ = _kohya(sd15_lora[1], "sd15")
    resized = {
        k: (torch.zeros(v.shape[0], ctx) if "attn2_to_k.lora_down" in k or "attn2_to_v.lora_down" in k else v)
        for k, v in tensors.items()
    }
    report = inspect_file(_write(tmp_path, "x.safetensors", resized))
    assert report.arch.name == arch
    assert any(f"context dim {ctx}" in r for r in report.arch.reasons)


@pytest.mark.parametrize("fixture, arch", [("sdxl_lora", "sdxl"), ("ssd1b_lora", "ssd1b")])
def test_sdxl_and_ssd1b_are_told_apart(tmp_path, request, fixture, arch):
    tensors, meta = _kohya(request.getfixturevalue(fixture)[1], arch, alpha=2.0)
    report = inspect_file(_write(tmp_path, "x.safetensors", tensors, meta))
    assert report.arch.name == arch and report.layout == "ldm"


def test_wrong_architecture_is_reported_before_any_tensor_is_loaded(tmp_path, sdxl_lora, monkeypatch):
    tensors, meta = _kohya(sdxl_lora[1], "sdxl", alpha=2.0)
    src = _write(tmp_path, "xl.safetensors", tensors, meta)

    def must_not_load(*args, **kwargs):
        raise AssertionError("tensors were loaded before the architecture check")

    monkeypatch.setattr("lcm_plugin.adapters.convert.load_tensors", must_not_load)
    with pytest.raises(
        ValueError, match=r"is for Stable Diffusion XL \(sdxl; .*not for Stable Diffusion 1.x \(sd15\)"
    ):
        convert_file(src, tmp_path / "out.safetensors", arch="sd15")
    assert not (tmp_path / "out.safetensors").exists()


def test_pickles_are_refused_without_unpickling(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    bin_path = tmp_path / "adapter.bin"
    bin_path.write_bytes(pickle.dumps({"lora": 1}, protocol=4))
    with pytest.raises(ValueError, match="is a Python pickle, not safetensors; refusing to unpickle"):
        inspect_file(bin_path)
    ckpt = tmp_path / "model.ckpt"
    with zipfile.ZipFile(ckpt, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match=r"zip archive \(torch.save format"):
        convert_file(ckpt, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path, sd15_lora):
    tensors, meta = _kohya(sd15_lora[1], "sd15")
    good = _write(tmp_path, "good.safetensors", tensors, meta)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    with pytest.raises(
        ValueError, match=r"cut.safetensors is truncated: tensors need \d+ bytes, file has \d+"
    ):
        inspect_file(cut)
    cut.write_bytes(data[:200])
    with pytest.raises(ValueError, match="is truncated: header needs"):
        inspect_file(cut)
    cut.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated or empty"):
        inspect_file(cut)
    text = tmp_path / "notes.txt"
    text.write_text("hello world, not a model")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        inspect_file(text)
    with pytest.raises(FileNotFoundError, match="adapter file not found"):
        inspect_file(tmp_path / "missing.safetensors")


def test_full_checkpoint_is_not_mistaken_for_a_lora(tmp_path):
    path = _write(
        tmp_path, "unet.safetensors", {"down_blocks.0.resnets.0.conv1.weight": torch.zeros(4, 4, 3, 3)}
    )
    with pytest.raises(ValueError, match="Is this a full model checkpoint rather than a LoRA adapter"):
        inspect_file(path)


def test_save_atomic_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        safetensors_io.save_atomic({"a": torch.zeros(1)}, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


def _unknown_shape_lora(tmp_path, metadata):
    """A LoRA whose shapes name no SD base (cross-attention context 64, as the toy teacher's) with ``metadata``."""
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.ones(
            2, 64
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.ones(
            32, 2
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": torch.tensor(2.0),
    }
    return _write(tmp_path, "meta.safetensors", tensors, metadata)


@pytest.mark.parametrize(
    "metadata, arch",
    [
        ({"lcm_plugin.architecture": "sd15"}, "sd15"),  # our trainer
        ({"lcm_plugin.base_arch": "sdxl", "lcm_plugin.architecture": "sd15"}, "sdxl"),  # our converter wins
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
        ({"ss_v2": "False"}, "sd15"),
        ({}, None),
    ],
)
def test_metadata_names_the_base_model_when_the_shapes_cannot(tmp_path, metadata, arch):
    report = inspect_file(_unknown_shape_lora(tmp_path, metadata))
    assert report.arch.name == arch and report.arch.declared == arch
    if arch is not None:
        assert "(the weights' names and shapes do not say)" in report.arch.reasons[-1]


def test_convert_refuses_a_target_the_metadata_contradicts(tmp_path):
    src = _unknown_shape_lora(tmp_path, {"lcm_plugin.architecture": "sd15"})
    with pytest.raises(
        ValueError,
        match=r"is for Stable Diffusion 1.x \(sd15; .*metadata lcm_plugin.architecture = sd15.*pass --for sd15",
    ):
        convert_file(src, tmp_path / "xl.safetensors", arch="sdxl")
    assert not (tmp_path / "xl.safetensors").exists()
    out = convert_file(src, tmp_path / "k.safetensors")  # no --for needed: the metadata says sd15
    assert out.arch == "sd15"
    meta = safetensors_io.read_header(out.output).metadata
    assert meta["lcm_plugin.base_arch"] == meta["lcm_plugin.architecture"] == "sd15"


def test_weights_decide_when_metadata_disagrees(tmp_path, sd15_lora, caplog):
    tensors, meta = _kohya(sd15_lora[1], "sd15")
    path = _write(tmp_path, "wrong_label.safetensors", tensors, {**meta, "lcm_plugin.base_arch": "sdxl"})
    report = inspect_file(path)
    assert report.arch.name == "sd15" and report.arch.declared == "sdxl"
    assert "metadata lcm_plugin.base_arch = sdxl disagrees; the weights' shapes decide" in report.arch.reasons
    out = convert_file(path, tmp_path / "fixed.safetensors", arch="sd15")  # allowed, with a warning
    assert out.arch == "sd15" and "trusting the weights" in caplog.text
    assert safetensors_io.read_header(out.output).metadata["lcm_plugin.base_arch"] == "sd15"


def test_shipped_toy_adapter_shows_its_metadata_base_model(capsys):
    from lcm_plugin.toy import paths
    from tests.adapters.test_cli import run

    assert run(["adapters", "inspect", str(paths.LCM_LORA / "pytorch_lora_weights.safetensors")]) == 0
    out = capsys.readouterr().out
    assert (
        "base model:  Stable Diffusion 1.x [sd15]" in out and "metadata lcm_plugin.architecture = sd15" in out
    )


def test_a_folder_is_named_as_a_folder(tmp_path):
    from lcm_plugin.toy import paths

    with pytest.raises(
        ValueError,
        match=r"is a folder, not an adapter file; pass one of its .safetensors files: pytorch_lora_weights",
    ):
        inspect_file(paths.LCM_LORA)
    with pytest.raises(FileNotFoundError, match="is a folder with no .safetensors file"):
        inspect_file(tmp_path)
