"""End-to-end runs on a tiny random SD pipeline: outputs load in diffusers, resume is bit-identical, LCD/LCF run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import lcm_plugin
from lora_training.trainer import Trainer
from tests.training.helpers import RES, base_config


def _images(pipe, steps=2):
    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

    pipe.scheduler = LCMPluginScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a red square",
        num_inference_steps=steps,
        guidance_scale=1.0,
        height=RES,
        width=RES,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, pipe_dir, data_dir):
    tmp = tmp_path_factory.mktemp("lora_run")
    cfg = base_config(
        tmp,
        pipe_dir,
        data_dir,
        max_train_steps=3,
        learning_rate=5e-3,
        original_inference_steps=20,
        validation_steps=3,
        validation_prompts=["a red square"],
        validation_num_steps=[1, 2],
    )
    return cfg, Trainer(cfg).train()


def test_lora_run_writes_loadable_diffusers_and_kohya_files(lora_run, pipe_dir):
    from lora_training.teachers import load_pipeline

    cfg, result = lora_run
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    diffusers_file, kohya_file = result.outputs["diffusers_lora"], result.outputs["kohya_lora"]
    with safe_open(str(diffusers_file), "pt") as f:
        meta = f.metadata()
        assert all(k.startswith("unet.") for k in f.keys())
    assert meta["lcm_plugin.version"] == lcm_plugin.__version__
    assert (
        meta["lcm_plugin.algorithm"] == "lora"
        and meta["lcm_plugin.rank"] == "4"
        and meta["lcm_plugin.steps"] == "3"
    )
    assert meta["lcm_plugin.base_model"] == str(pipe_dir) and meta["lcm_plugin.architecture"] == "sd15"
    with safe_open(str(kohya_file), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert any(k.endswith(".lora_down.weight") for k in keys) and any(k.endswith(".alpha") for k in keys)

    pipe = load_pipeline(str(pipe_dir))
    base = _images(pipe)
    pipe.load_lora_weights(str(diffusers_file), adapter_name="lcm")
    from peft.utils import get_peft_model_state_dict

    with safe_open(str(diffusers_file), "pt") as f:
        n_file = len(list(f.keys()))
    assert (
        len(get_peft_model_state_dict(pipe.unet, adapter_name="lcm")) == n_file
    )  # every LoRA tensor loaded, none skipped
    with_lora = _images(pipe)
    assert (with_lora - base).abs().max() > 1e-3  # the adapter changes the output
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(kohya_file))
    torch.testing.assert_close(_images(pipe), with_lora, atol=1e-4, rtol=1e-4)  # kohya file == diffusers file
    assert (
        cfg.output_dir
        and (result.outputs["diffusers_lora"].parent / "validation" / "step-000003.png").is_file()
    )


def test_fuse_writes_a_full_lcm_pipeline(lora_run, pipe_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from lcm_plugin.cli import main
    from lora_training.teachers import load_pipeline

    _, result = lora_run
    out = tmp_path / "fused"
    assert (
        main(
            [
                "train",
                "fuse",
                "--base",
                str(pipe_dir),
                "--lora",
                str(result.outputs["diffusers_lora"]),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    fused = StableDiffusionPipeline.from_pretrained(str(out), local_files_only=True, safety_checker=None)
    sched_cfg = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched_cfg["_class_name"] == "LCMScheduler"
    # the grid the adapter was distilled on travels into the full LCM's scheduler
    assert sched_cfg["original_inference_steps"] == 20
    ref = load_pipeline(str(pipe_dir))
    ref.load_lora_weights(str(result.outputs["diffusers_lora"]))
    torch.testing.assert_close(_images(fused), _images(ref), atol=1e-4, rtol=1e-4)


class _Killed(Exception):
    pass


def test_resume_after_kill_is_bit_identical(tmp_path, pipe_dir, data_dir, monkeypatch):
    kw = dict(
        max_train_steps=4,
        checkpointing_steps=2,
        target="ema",
        ema_decay=0.5,
        train_batch_size=3,
        lr_warmup_steps=2,
        lr_scheduler="linear",
    )
    straight = Trainer(base_config(tmp_path / "a", pipe_dir, data_dir, **kw))
    full = straight.train()
    first = Trainer(base_config(tmp_path / "b", pipe_dir, data_dir, **kw))
    original_save = Trainer.save_checkpoint

    def save_then_die(self):
        original_save(self)
        raise _Killed  # the process dies right after the step-2 checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        first.train()
    monkeypatch.setattr(Trainer, "save_checkpoint", original_save)
    assert [p.name for p in (tmp_path / "b" / "out").glob("checkpoint-*")] == ["checkpoint-2"]
    resumed = Trainer(base_config(tmp_path / "b", pipe_dir, data_dir, **kw, resume_from_checkpoint="latest"))
    rest = resumed.train()
    # the killed run's losses, as its train_log.jsonl recorded them (log_every=1; JSON floats round-trip exactly)
    log = [json.loads(line) for line in (tmp_path / "b" / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # the resumed run appends steps 3 and 4
    assert [r["loss"] for r in log[:2]] + rest.losses == full.losses
    for (n, p), (n2, q) in zip(straight.models.trainable, resumed.models.trainable, strict=True):
        assert n == n2 and torch.equal(p, q), n
    for e, f in zip(straight.models.ema.shadow_params, resumed.models.ema.shadow_params, strict=True):
        assert torch.equal(e, f)
    assert resumed.stream.position == straight.stream.position


def test_full_lcd_starts_at_teacher_and_exports_lcm_pipeline(tmp_path, pipe_dir, data_dir):
    from diffusers import UNet2DConditionModel

    from lcm_plugin.core import guidance_scale_embedding
    from lora_training.teachers import lcd_student_from_teacher

    teacher = UNet2DConditionModel.from_pretrained(str(pipe_dir / "unet"))
    student = lcd_student_from_teacher(teacher, 256)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([499])
    h = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = teacher(x, t, encoder_hidden_states=h).sample
        for w in (0.0, 7.0):
            out = student(
                x, t, encoder_hidden_states=h, timestep_cond=guidance_scale_embedding(torch.tensor([w]))
            ).sample
            torch.testing.assert_close(out, ref)
    cfg = base_config(
        tmp_path, pipe_dir, data_dir, method="lcd", max_train_steps=2, target="ema", original_inference_steps=20
    )
    result = Trainer(cfg).train()
    folder = result.outputs["lcm_pipeline"]
    sched_cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched_cfg["original_inference_steps"] == 20  # samples on the grid it was distilled on (k = 50)
    assert json.loads((folder / "lcm_plugin.json").read_text())["lcm_plugin.original_inference_steps"] == "20"
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_cfg["time_cond_proj_dim"] == 256
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None)
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    assert torch.isfinite(_images(pipe, steps=2)).all()
    # LCF of the full LCM just written (no teacher, w-embedding kept)
    lcf = Trainer(base_config(tmp_path / "lcf", folder, data_dir, method="lcf", max_train_steps=1))
    assert lcf.models.w_embedding_dim == 256 and lcf.models.teacher is None
    assert "lcm_pipeline" in lcf.train().outputs


def test_lcf_from_lcm_lora(tmp_path, lora_run, pipe_dir, data_dir):
    _, lora_result = lora_run
    cfg = base_config(
        tmp_path / "lora",
        pipe_dir,
        data_dir,
        method="lcf",
        init_lora=str(lora_result.outputs["diffusers_lora"]),
        max_train_steps=2,
    )
    trainer = Trainer(cfg)
    start = {n: p.detach().clone() for n, p in trainer.models.trainable}
    with safe_open(str(lora_result.outputs["diffusers_lora"]), "pt") as f:
        some = next(k for k in f.keys() if "lora_B" in k)
        stored = f.get_tensor(some)
    peft_name = some.replace("unet.", "", 1).replace("lora_B.weight", "lora_B.default.weight")
    assert torch.equal(start[peft_name], stored)  # LCF starts from the LCM-LoRA
    result = trainer.train()
    assert result.steps == 2 and "diffusers_lora" in result.outputs
    assert trainer.objective.with_teacher is False


def test_cache_gives_the_same_losses_as_on_the_fly_encoding(tmp_path, pipe_dir, data_dir):
    from lcm_plugin.cli import main

    cache = tmp_path / "cache.safetensors"
    assert (
        main(
            [
                "train",
                "cache",
                "--pretrained-model",
                str(pipe_dir),
                "--train-data-dir",
                str(data_dir),
                "--resolution",
                str(RES),
                "--output",
                str(cache),
            ]
        )
        == 0
    )
    direct = Trainer(base_config(tmp_path / "a", pipe_dir, data_dir, max_train_steps=2)).train()
    cached = Trainer(
        base_config(
            tmp_path / "b", pipe_dir, None, train_data_dir=None, cache_file=str(cache), max_train_steps=2
        )
    ).train()
    torch.testing.assert_close(torch.tensor(cached.losses), torch.tensor(direct.losses), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_other_solvers_and_l2_and_vpred_teacher_run(tmp_path, vpred_pipe_dir, data_dir, solver):
    cfg = base_config(
        tmp_path, vpred_pipe_dir, data_dir, solver=solver, loss_type="l2", max_train_steps=2, omega=7.5
    )
    result = Trainer(cfg).train()
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))


def test_cli_train_lora(tmp_path, pipe_dir, data_dir, capsys):
    from lcm_plugin.cli import main

    rc = main(
        [
            "train",
            "lora",
            "--pretrained-model",
            str(pipe_dir),
            "--train-data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp_path / "o"),
            "--resolution",
            str(RES),
            "--train-batch-size",
            "2",
            "--max-train-steps",
            "1",
            "--lora-rank",
            "2",
            "--lora-alpha",
            "2",
            "--no-gradient-checkpointing",
        ]
    )
    assert rc == 0
    assert "diffusers_lora:" in capsys.readouterr().out
    assert (
        main(
            ["train", "lora", "--pretrained-model", str(tmp_path / "nope"), "--train-data-dir", str(data_dir)]
        )
        == 1
    )
    assert "does not exist" in capsys.readouterr().err
