"""Every bad input gets a clear error (or a counted skip where users expect one)."""

from __future__ import annotations

import errno
import io
import tarfile

import pytest
import torch

from lora_training.config import TrainConfig
from lora_training.data import BatchStream, CaptionFolder, WebDatasetShards
from lora_training.trainer import Trainer
from tests.training.helpers import RES, base_config, tiny_pipeline, write_image_folder


def test_config_validation_messages(tmp_path):
    ok = dict(pretrained_model="x", train_data_dir="d")
    with pytest.raises(ValueError, match="method 'dmd' is not supported"):
        TrainConfig(**ok, method="dmd")
    with pytest.raises(ValueError, match="pretrained_model is required"):
        TrainConfig(train_data_dir="d")
    with pytest.raises(ValueError, match="no training data"):
        TrainConfig(pretrained_model="x")
    with pytest.raises(ValueError, match="exactly one of"):
        TrainConfig(**ok, cache_file="c")
    with pytest.raises(ValueError, match="w_min <= w_max"):
        TrainConfig(**ok, w_min=9, w_max=3)
    with pytest.raises(ValueError, match="solver 'heun'"):
        TrainConfig(**ok, solver="heun")
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(**ok, ema_decay=1.0)
    with pytest.raises(ValueError, match="LCF fine-tunes an existing LCM"):
        TrainConfig(**ok, method="lcf")
    with pytest.raises(ValueError, match="lora_rank must be >= 1"):
        TrainConfig(**ok, lora_rank=0)
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({**ok, "lora_rnak": 4})
    with pytest.raises(ValueError, match="target 'teacher' is not supported"):
        TrainConfig(**ok, target="teacher")
    with pytest.raises(ValueError, match=r"original_inference_steps must be in \[1, 1000\], got 0"):
        TrainConfig(**ok, original_inference_steps=0)
    # a config of an earlier run (num_ddim_timesteps, the field's old name) still loads; both names are refused
    assert TrainConfig.from_dict({**ok, "num_ddim_timesteps": 20}).original_inference_steps == 20
    with pytest.raises(ValueError, match="sets both 'num_ddim_timesteps' and 'original_inference_steps'"):
        TrainConfig.from_dict({**ok, "num_ddim_timesteps": 20, "original_inference_steps": 50})


def test_target_network_default_depends_on_the_method():
    ok = dict(pretrained_model="x", train_data_dir="d")
    # full LCD defaults to an EMA target (its student target collapsed on the toy: BENCHMARKS, session 5)
    assert TrainConfig(**ok, method="lcd").target == "ema"
    assert TrainConfig(**ok).target == "student"  # the reference LCM-LoRA behaviour
    assert TrainConfig(**ok, method="lcd", target="student").target == "student"  # an explicit choice stays
    resolved = TrainConfig(**ok, method="lcd").to_dict()
    assert TrainConfig.from_dict(resolved).target == "ema"  # round-trips through the JSON config


def test_missing_captions_corrupt_images_and_empty_folders(tmp_path):
    d = write_image_folder(tmp_path / "a", n=8)
    (d / "img000.txt").unlink()
    (d / "img001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"2 of 8 samples .* unusable \(1 missing caption, 1 corrupt image\).*max_bad_fraction"):
        CaptionFolder(d, resolution=RES)
    ds = CaptionFolder(d, resolution=RES, max_bad_fraction=0.5)  # skipped with a count
    assert len(ds) == 6 and ds.skipped == {"missing_caption": 1, "corrupt_image": 1, "empty_caption": 0}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty dataset"):
        CaptionFolder(empty, resolution=RES)
    nocap = write_image_folder(tmp_path / "nocap", n=2)
    for p in nocap.glob("*.txt"):
        p.unlink()
    with pytest.raises(ValueError, match="empty dataset.*missing caption"):
        CaptionFolder(nocap, resolution=RES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CaptionFolder(tmp_path / "nope", resolution=RES)
    with pytest.raises(ValueError, match="fewer than one batch"):
        BatchStream(CaptionFolder(write_image_folder(tmp_path / "two", n=2), resolution=RES), batch_size=4, seed=0)


def _tar(path, entries):
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_pairs_skips_and_errors(tmp_path):
    d = write_image_folder(tmp_path / "imgs", n=4)
    entries = []
    for i in range(4):
        entries += [(f"k{i}.png", (d / f"img{i:03d}.png").read_bytes()), (f"k{i}.txt", (d / f"img{i:03d}.txt").read_bytes())]
    entries += [("k9.txt", b"caption without image"), ("k8.png", b"garbage"), ("k8.txt", b"a broken one")]
    _tar(tmp_path / "s0.tar", entries[:4])
    _tar(tmp_path / "s1.tar", entries[4:])
    src = WebDatasetShards([str(tmp_path / "s0.tar"), str(tmp_path / "s1.tar")], resolution=RES, max_bad_fraction=0.5)
    samples = list(src.samples(seed=0, epoch=0))
    assert sorted(s["caption"] for s in samples) == sorted((d / f"img{i:03d}.txt").read_text() for i in range(4))
    assert src.skipped == 1
    strict = WebDatasetShards([str(tmp_path / "s1.tar")], resolution=RES, max_bad_fraction=0.0)
    with pytest.raises(ValueError, match="corrupt images"):
        list(strict.samples(seed=0, epoch=0))
    with pytest.raises(FileNotFoundError, match="shards not found"):
        WebDatasetShards([str(tmp_path / "missing.tar")], resolution=RES)


def test_webdataset_training_runs(tmp_path, pipe_dir):
    d = write_image_folder(tmp_path / "imgs", n=4)
    entries = []
    for i in range(4):
        entries += [(f"k{i}.png", (d / f"img{i:03d}.png").read_bytes()), (f"k{i}.txt", (d / f"img{i:03d}.txt").read_bytes())]
    _tar(tmp_path / "s0.tar", entries)
    cfg = base_config(tmp_path, pipe_dir, None, train_data_dir=None, webdataset_shards=[str(tmp_path / "s0.tar")], max_train_steps=3)
    assert Trainer(cfg).train().steps == 3  # 2 batches per epoch: crosses an epoch boundary


def test_lora_architecture_mismatch(tmp_path, pipe_dir, data_dir):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from tests.training.helpers import tiny_unet

    other = tiny_unet()
    other.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "conv1"]))
    # a LoRA for a UNet with other channel widths
    from diffusers import UNet2DConditionModel

    wide = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8)
    wide.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "conv1"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(wide),
                                              weight_name="wide.safetensors")
    cfg = base_config(tmp_path, pipe_dir, data_dir, init_lora=str(tmp_path / "wide.safetensors"))
    with pytest.raises(ValueError, match="does not fit this UNet \\(architecture mismatch\\)"):
        Trainer(cfg)
    with pytest.raises(FileNotFoundError, match="init_lora .* does not exist"):
        Trainer(base_config(tmp_path, pipe_dir, data_dir, init_lora=str(tmp_path / "none.safetensors")))
    # a separate teacher of another architecture
    tp = tiny_pipeline()
    tp.unet = wide
    tp.register_modules(unet=UNet2DConditionModel.from_config(wide.config))
    tp.save_pretrained(tmp_path / "wide_pipe")
    with pytest.raises(ValueError, match="teacher and student UNets differ in architecture"):
        Trainer(base_config(tmp_path, pipe_dir, data_dir, teacher_model=str(tmp_path / "wide_pipe")))


def test_nan_loss_raises_or_is_skipped_with_a_count(tmp_path, pipe_dir, data_dir, monkeypatch):
    import lora_training.trainer as trainer_mod

    real = trainer_mod.lcm_loss
    calls = {"n": 0}

    def sometimes_nan(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(trainer_mod, "lcm_loss", sometimes_nan)
    with pytest.raises(RuntimeError, match="loss became NaN/inf at step 2.*nan_policy='skip'"):
        Trainer(base_config(tmp_path / "a", pipe_dir, data_dir, max_train_steps=3)).train()
    calls["n"] = 0
    t = Trainer(base_config(tmp_path / "b", pipe_dir, data_dir, max_train_steps=3, nan_policy="skip"))
    result = t.train()
    assert result.skipped_nan_steps == 1 and all(torch.isfinite(p).all() for _, p in t.models.trainable)


def test_full_disk_on_checkpoint_is_clear_and_leaves_nothing(tmp_path, pipe_dir, data_dir, monkeypatch):
    import safetensors.torch

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg = base_config(tmp_path, pipe_dir, data_dir, max_train_steps=1)
    trainer = Trainer(cfg)
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(RuntimeError, match="no space left on the device.*nothing was half-written"):
        trainer.train()
    out = tmp_path / "out"
    assert not list(out.glob("checkpoint-*")) and not list(out.glob(".checkpoint-*"))


def test_unavailable_optional_backends(tmp_path, pipe_dir, data_dir):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes with CUDA is available here")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(RuntimeError, match="use_8bit_adam needs bitsandbytes"):
            Trainer(base_config(tmp_path, pipe_dir, data_dir, use_8bit_adam=True))
    with pytest.raises(RuntimeError, match="nf4_base .* needs bitsandbytes and a CUDA GPU"):
        Trainer(base_config(tmp_path, pipe_dir, data_dir, nf4_base=True))


def test_bad_model_paths(tmp_path, data_dir):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK")
    with pytest.raises(ValueError, match="only .safetensors single-file checkpoints"):
        Trainer(base_config(tmp_path, ckpt, data_dir))
    st = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(st))  # header of a checkpoint: needs a config
    with pytest.raises(ValueError, match="pass single_file_config"):
        Trainer(base_config(tmp_path, st, data_dir))
    save_file({"x": torch.zeros(1)}, str(st))  # not a checkpoint at all: refused before asking for a config
    with pytest.raises(ValueError, match="not a full SD single-file checkpoint"):
        Trainer(base_config(tmp_path, st, data_dir))
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        Trainer(base_config(tmp_path, tmp_path / "folder", data_dir))


def test_jsonl_caption_index(tmp_path):
    import json

    d = write_image_folder(tmp_path / "j", n=4)
    for p in d.glob("*.txt"):
        p.unlink()
    rows = [{"file_name": f"img{i:03d}.png", "text": f"caption {i}"} for i in range(3)]
    (d / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = CaptionFolder(d, resolution=RES, max_bad_fraction=0.5)
    assert [c for _, c in ds.items] == ["caption 0", "caption 1", "caption 2"] and ds.skipped["missing_caption"] == 1
    (d / "metadata.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not a JSON object with file_name and text"):
        CaptionFolder(d, resolution=RES)


def test_full_disk_on_export_is_clear_and_resume_exports(tmp_path, pipe_dir, data_dir, monkeypatch):
    import lora_training.export as export_mod

    real = export_mod.save_diffusers_lora

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "save_diffusers_lora", full_disk)
    cfg = base_config(tmp_path, pipe_dir, data_dir, max_train_steps=1)
    with pytest.raises(RuntimeError, match="no space left on the device while exporting.*checkpoint-1 is intact"):
        Trainer(cfg).train()
    assert not (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()
    monkeypatch.setattr(export_mod, "save_diffusers_lora", real)
    result = Trainer(base_config(tmp_path, pipe_dir, data_dir, max_train_steps=1, resume_from_checkpoint="latest")).train()
    assert result.outputs["diffusers_lora"].is_file() and result.losses == []


def test_hf_dataset_needs_datasets(tmp_path):
    import importlib.util

    from lora_training.data import HFDataset

    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("`datasets` is installed here; the missing-package message cannot be checked")
    with pytest.raises(RuntimeError, match="hf_dataset needs the `datasets` package: pip install datasets"):
        HFDataset(str(tmp_path), image_column="image", caption_column="text", resolution=RES)
