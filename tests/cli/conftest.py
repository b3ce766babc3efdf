"""Inputs for the bad-input table: tiny real-architecture models and damaged files, built once per session."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import types
import zipfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _unwritable(base: Path) -> Path | None:
    """A folder that refuses new entries: mode 0500 for a normal user; a sysfs folder for root (root ignores modes)."""
    if os.geteuid() != 0:
        folder = base / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        candidates = [folder]
    else:
        candidates = [Path("/sys"), Path("/proc")]
    for folder in candidates:
        try:
            os.rmdir(tempfile.mkdtemp(dir=folder))
        except OSError:
            return folder
    return None


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lora(unet, path: Path, targets=("to_q", "to_k", "to_v", "to_out.0"), nan: bool = False) -> Path:
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=list(targets), init_lora_weights=False))
    state = get_peft_model_state_dict(unet)
    if nan:
        first = next(iter(state))
        state[first] = torch.full_like(state[first], float("nan"))
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=state, weight_name=path.name)
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Every input a row needs, in one read-only-by-convention folder (rows write only under their tmp_path)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from lora_training.single_file import save_single_file
    from tests.adapters.servers import FileServer
    from tests.training.helpers import save_tiny_pipeline, tiny_pipeline, tiny_unet, write_image_folder

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("inputs")
    w = types.SimpleNamespace(root=d)
    w.pipe = save_tiny_pipeline(d / "pipe")
    w.ckpt = save_single_file(tiny_pipeline(), d / "model.safetensors", arch="sd15")
    # a pipeline whose UNet output is NaN (e.g. fused with a NaN scale by an older version)
    nan_pipe = tiny_pipeline()
    torch.nn.init.constant_(nan_pipe.unet.conv_out.weight, float("nan"))
    nan_pipe.save_pretrained(d / "nan_pipe", safe_serialization=True)
    w.nan_pipe = d / "nan_pipe"
    # a config folder of another architecture (wider UNet) for the single file
    wide = UNet2DConditionModel(**{**dict(tiny_unet().config), "block_out_channels": (64, 64)})
    other = tiny_pipeline()
    other.register_modules(unet=wide)
    other.save_pretrained(d / "wide_pipe", safe_serialization=True)
    w.wide_pipe = d / "wide_pipe"
    # a pipeline folder whose UNet weights were cut short
    shutil.copytree(w.pipe, d / "broken_pipe")
    weights = next((d / "broken_pipe" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    w.broken_pipe = d / "broken_pipe"
    w.lora = _lora(tiny_unet(), d / "lora" / "pytorch_lora_weights.safetensors")
    w.nan_lora = _lora(tiny_unet(), d / "nan_lora" / "pytorch_lora_weights.safetensors", nan=True)
    w.wide_lora = _lora(UNet2DConditionModel.from_config(wide.config), d / "wide.safetensors",
                        targets=("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"))  # fmt: skip
    # damaged and foreign files
    data = w.ckpt.read_bytes()
    pickle_bytes = b"\x80\x04\x95" + b"\x00" * 64
    w.truncated = _file(d / "truncated.safetensors", data[: len(data) // 2])
    w.garbage = _file(d / "garbage.safetensors", b"not a checkpoint" * 64)
    w.empty = _file(d / "empty.safetensors", b"")
    w.pickle = _file(d / "pickle.safetensors", pickle_bytes)
    w.ckpt_pickle = _file(d / "model.ckpt", pickle_bytes)
    w.zip = d / "zip.safetensors"
    with zipfile.ZipFile(w.zip, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x04")
    w.a_file = _file(d / "a_file.txt", b"just a file")
    w.no_index, w.single_inside, w.empty_dir = (d / n for n in ("no_index", "single_inside", "empty_dir"))
    for folder in (w.no_index, w.single_inside, w.empty_dir):
        folder.mkdir()
    shutil.copy(w.ckpt, w.single_inside / "model.safetensors")
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    unknown = {f"{key}.lora_down.weight": torch.ones(2, 64), f"{key}.lora_up.weight": torch.ones(32, 2),
               f"{key}.alpha": torch.tensor(2.0)}  # fmt: skip
    save_file(unknown, str(d / "sd15_by_metadata.safetensors"), metadata={"lcm_plugin.architecture": "sd15"})
    w.sd15_by_metadata = d / "sd15_by_metadata.safetensors"
    save_file(unknown, str(d / "unknown_arch.safetensors"))
    w.unknown_arch = d / "unknown_arch.safetensors"
    w.data = write_image_folder(d / "images", n=4)
    w.config_bad = _file(d / "bad.json", b"{learning_rate: 1e-4")
    w.config_list = _file(d / "list.json", b"[1, 2]")
    w.unwritable = _unwritable(d)
    w.server = FileServer().__enter__()
    w.url_truncated = w.server.add("/t.safetensors", w.lora.read_bytes()[:-10])
    w.url_missing = w.server.url + "/missing.safetensors"
    w.url_ckpt = w.server.add("/x.ckpt", b"\x80\x04\x95" + b"\x00" * 64)
    w.url_refused = f"http://127.0.0.1:{_free_port()}/a.safetensors"
    yield w
    w.server.__exit__(None, None, None)
    if w.unwritable is not None and w.unwritable.is_relative_to(d):
        w.unwritable.chmod(0o700)
