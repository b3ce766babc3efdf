"""``lcm-plugin adapters list | download | inspect | convert`` end to end."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from lcm_plugin.adapters import commands
from lcm_plugin.adapters.convert import adapter_from_state_dict, load_adapter, to_kohya_state_dict


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lcm-plugin")
    sub = parser.add_subparsers(dest="command")
    commands.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture()
def sdxl_file(tmp_path, sdxl_lora):
    adapter = adapter_from_state_dict(sdxl_lora[1])
    tensors, meta = to_kohya_state_dict(adapter, "sdxl")
    path = tmp_path / "xl.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def test_list_shows_registry_with_unknowns_marked(capsys):
    assert run(["adapters", "list"]) == 0
    out = capsys.readouterr().out
    assert "lcm-lora-sd15" in out and "latent-consistency/lcm-lora-sdv1-5" in out and "134,621,556 B" in out
    assert "size unknown, sha256 unknown" in out  # the full checkpoints
    assert run(["adapters", "list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    sd15 = next(e for e in entries if e["name"] == "lcm-lora-sd15")
    assert sd15["sha256"] == "8f90d840e075ff588a58e22c6586e2ae9a6f7922996ee6649a7f01072333afe4"
    assert (
        sd15["url"]
        == "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5/resolve/main/pytorch_lora_weights.safetensors"
    )


def test_inspect_and_convert_round_trip(tmp_path, sdxl_file, capsys):
    assert run(["adapters", "inspect", str(sdxl_file)]) == 0
    out = capsys.readouterr().out
    assert "kohya (UNet names: ldm layout)" in out and "Stable Diffusion XL [sdxl]" in out
    assert run(["adapters", "inspect", "--json", "--sha256", str(sdxl_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["arch"]["name"] == "sdxl" and len(data["sha256"]) == 64
    dif = tmp_path / "dif.safetensors"
    assert run(["adapters", "convert", str(sdxl_file), str(dif), "--to", "diffusers", "--for", "sdxl"]) == 0
    back = tmp_path / "back.safetensors"
    assert run(["adapters", "convert", str(dif), str(back), "--for", "sdxl"]) == 0
    assert "kohya, ldm layout" in capsys.readouterr().out
    a, b = load_adapter(sdxl_file), load_adapter(back)
    assert all(torch.equal(a.modules[n].up, b.modules[n].up) for n in a.modules)


def test_cli_main_prints_one_line_errors(tmp_path, sdxl_file, capsys):
    from lcm_plugin.cli import main

    assert (
        main(["adapters", "convert", str(sdxl_file), str(tmp_path / "o.safetensors"), "--for", "sd15"]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: the adapter is for Stable Diffusion XL" in err
    assert main(["adapters", "download", "lcm-lora-sdxl", "--for", "sd15", "--dest", str(tmp_path)]) == 1
    assert "lcm-lora-sdxl is for sdxl, not sd15" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xl.safetensors"]
