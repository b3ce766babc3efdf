"""The evaluation harness on a tiny setting (teacher rows and an LCM-LoRA row), the report and the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from lcm_plugin.toy.evaluate import EvalConfig, Sampler, evaluate_samplers, lcm_sampler, standard_samplers
from lcm_plugin.toy.report import markdown_table, metrics_chart


def test_harness_runs_teacher_and_lcm_rows(teacher_pipe, judge, random_lora, tmp_path):
    before = teacher_pipe.scheduler
    samplers = [standard_samplers(4.0, (1, 2))[0], lcm_sampler(str(random_lora), (1,))]
    rows = evaluate_samplers(
        teacher_pipe, samplers, judge, EvalConfig(n_samples=8, batch=8, kid_subset=4), keep_samples=2
    )
    assert [(r.sampler, r.steps) for r in rows] == [
        ("real vs real (re-render)", 0),
        ("DDIM", 1),
        ("DDIM", 2),
        ("LCM-LoRA", 1),
    ]
    for r in rows:
        assert math.isfinite(r.fd) and math.isfinite(r.kid) and 0.0 <= r.adherence["all"] <= 1.0
    assert rows[1].unet_evals == 2 and rows[3].unet_evals == 1
    assert rows[1].samples.shape == (2, 3, 32, 32)
    # The pipeline is handed back unchanged: same scheduler, no LoRA left behind.
    assert teacher_pipe.scheduler is before
    assert not any("lora" in n for n, _ in teacher_pipe.unet.named_parameters())
    table = markdown_table(rows)
    assert "| DDIM | 2 | 4 | 4 |" in table and "adherence all" in table
    assert metrics_chart(rows, tmp_path / "chart.png").stat().st_size > 1000


def test_same_seed_same_images(teacher_pipe):
    from lcm_plugin.toy.evaluate import generate

    a = generate(
        teacher_pipe, ["a red circle in the center on a black background"] * 2, 1, 1.0, seed=3, batch=1
    )
    b = generate(
        teacher_pipe, ["a red circle in the center on a black background"] * 2, 1, 1.0, seed=3, batch=2
    )
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a[0], a[1])


def test_bad_sampler_settings_are_rejected():
    with pytest.raises(ValueError, match="steps of sampler 'x' must be"):
        Sampler("x", lambda c: c, 1.0, ())
    with pytest.raises(ValueError, match="guidance_scale of sampler 'x'"):
        Sampler("x", lambda c: c, -1.0, (1,))


def test_cli_errors_are_clear(capsys):
    from lcm_plugin.cli import main

    assert main(["toy", "evaluate", "--samplers", "plms"]) == 1
    assert "unknown sampler(s) ['plms']" in capsys.readouterr().err
    assert main(["toy", "evaluate", "--steps", "1,two"]) == 1
    assert "steps must be comma-separated integers" in capsys.readouterr().err


def test_second_render_keeps_scenes_but_changes_pixels():
    from lcm_plugin.toy.evaluate import second_render
    from lcm_plugin.toy.judge_train import real_images

    real, scenes, _ = real_images("test", 16)
    again, again_scenes = second_render("test", 16)
    assert again_scenes == scenes and again.shape == real.shape and not torch.allclose(again, real)


def test_vae_ceiling_row_scores_real_images_through_the_vae(teacher_pipe, judge):
    from lcm_plugin.toy.evaluate import VAE_ROUNDTRIP_NAME

    rows = evaluate_samplers(
        teacher_pipe,
        [standard_samplers(4.0, (1,))[0]],
        judge,
        EvalConfig(n_samples=16, batch=16, kid_subset=4),
        vae_ceiling=True,
    )
    assert [(r.sampler, r.steps) for r in rows] == [
        ("real vs real (re-render)", 0),
        (VAE_ROUNDTRIP_NAME, 0),
        ("DDIM", 1),
    ]
    ceiling, one_step = rows[1], rows[2]
    # The shipped VAE reconstructs test images well enough for the judge to read most of them, and far
    # better than a 1-step DDIM sample; a wrong pixel range in the round trip would score near zero.
    assert ceiling.adherence["all"] >= 0.6 and ceiling.adherence["background"] == 1.0
    assert ceiling.fd < one_step.fd / 3


def test_validation_split_for_model_selection(judge, teacher_pipe, monkeypatch):
    import lcm_plugin.toy.evaluate as ev

    seen = []
    real_images = ev.real_images
    monkeypatch.setattr(ev, "real_images", lambda split, n: seen.append(split) or real_images(split, n))
    rows = evaluate_samplers(
        teacher_pipe, [], judge, EvalConfig(n_samples=8, batch=8, kid_subset=4, split="val")
    )
    assert (
        seen == ["val", "val"] and rows[0].sampler == "real vs real (re-render)" and math.isfinite(rows[0].fd)
    )
    assert ev.real_images("val", 4)[2] != ev.real_images("test", 4)[2]  # other prompts than the reported rows
    with pytest.raises(ValueError, match="split must be 'test'"):
        EvalConfig(split="train")


def test_lcm_rows_sample_on_the_grid_the_adapter_was_distilled_on(teacher_pipe, tmp_path):
    from safetensors.torch import save_file

    from lcm_plugin.adapters.inspection import read_original_inference_steps

    tensors = {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 4)}
    ours = tmp_path / "ours" / "pytorch_lora_weights.safetensors"
    ours.parent.mkdir()
    save_file(tensors, str(ours), metadata={"lcm_plugin.original_inference_steps": "20"})
    public = tmp_path / "public.safetensors"
    save_file(tensors, str(public))
    assert read_original_inference_steps(ours) == 20 and read_original_inference_steps(ours.parent) == 20
    assert read_original_inference_steps(public) is None
    # files written before the key was renamed (the shipped toy LoRA among them) keep their grid; the new key wins
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"lcm_plugin.num_ddim_timesteps": "25"})
    both = tmp_path / "both.safetensors"
    save_file(
        tensors,
        str(both),
        metadata={"lcm_plugin.num_ddim_timesteps": "25", "lcm_plugin.original_inference_steps": "20"},
    )
    assert read_original_inference_steps(old) == 25 and read_original_inference_steps(both) == 20

    sched = lcm_sampler(str(ours), (4,)).scheduler_factory(teacher_pipe.scheduler.config)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 749, 499, 249]  # N = 20: k = 50
    sched = lcm_sampler(str(public), (4,)).scheduler_factory(teacher_pipe.scheduler.config)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]  # the public default N = 50


def test_tcd_gamma_rows_and_device_option(teacher_pipe, tmp_path, capsys):
    from safetensors.torch import save_file

    from lcm_plugin.cli import main

    lora = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(
        {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 4)},
        str(lora),
        metadata={"lcm_plugin.original_inference_steps": "20"},
    )
    row = lcm_sampler(str(lora), (2,), gamma=0.3)
    assert row.name == "LCM-LoRA (gamma 0.3)" and lcm_sampler(str(lora), (2,)).name == "LCM-LoRA"
    sched = row.scheduler_factory(teacher_pipe.scheduler.config)
    assert sched.config.gamma == pytest.approx(0.3) and sched.config.original_inference_steps == 20
    assert lcm_sampler(str(lora), (2,)).scheduler_factory(teacher_pipe.scheduler.config).config.gamma == 1.0
    with pytest.raises(ValueError, match="gamma must be in"):
        lcm_sampler(str(lora), (2,), gamma=1.5)
    assert main(["toy", "evaluate", "--lcm-lora", str(lora), "--lcm-gamma", "-0.1"]) == 1
    assert "gamma must be in [0, 1]" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["toy", "evaluate", "--samplers", "ddim", "--device", "cuda"]) == 1
        assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_explicit_lcm_timesteps_row(teacher_pipe, judge, random_lora, tmp_path, capsys):
    from safetensors.torch import save_file

    from lcm_plugin.cli import main
    from lcm_plugin.toy.evaluate import generate

    lora = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(
        {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 4)},
        str(lora),
        metadata={"lcm_plugin.original_inference_steps": "20"},
    )
    row = lcm_sampler(str(lora), (1, 2, 4), timesteps=[999, 899, 749, 549])
    assert row.name == "LCM-LoRA [999,899,749,549]" and row.steps == (4,)
    assert row.timesteps == (999, 899, 749, 549)
    # The pipeline really samples at those timesteps (the scheduler records the last schedule it was given).
    pipe_sched = row.scheduler_factory(teacher_pipe.scheduler.config)
    original = teacher_pipe.scheduler
    teacher_pipe.scheduler = pipe_sched
    try:
        a = generate(
            teacher_pipe, ["a red circle in the center on a black background"], 4, 1.0, 0, 1, row.timesteps
        )
        assert pipe_sched.timesteps.tolist() == [999, 899, 749, 549]
        b = generate(teacher_pipe, ["a red circle in the center on a black background"], 4, 1.0, 0, 1)
        assert pipe_sched.timesteps.tolist() == [999, 749, 499, 249]
        assert not torch.allclose(a, b)
    finally:
        teacher_pipe.scheduler = original
    with pytest.raises(ValueError, match="strictly descending"):
        lcm_sampler(str(lora), (4,), timesteps=[499, 999])
    with pytest.raises(ValueError, match="must be"):
        Sampler("x", lambda c: c, 1.0, (2,), timesteps=(999, 499, 249))
    real_row = lcm_sampler(str(random_lora), (1,), timesteps=[999, 899, 749, 549])
    rows = evaluate_samplers(teacher_pipe, [real_row], judge, EvalConfig(n_samples=4, batch=4, kid_subset=2))
    assert [(r.sampler, r.steps, r.unet_evals) for r in rows[1:]] == [("LCM-LoRA [999,899,749,549]", 4, 4)]
    assert main(["toy", "evaluate", "--lcm-lora", str(lora), "--lcm-timesteps", "999,x"]) == 1
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["toy", "evaluate", "--lcm-lora", str(lora), "--lcm-timesteps", "1200,999"]) == 1
    assert "must lie in [0, 1000)" in capsys.readouterr().err


def test_unet_evals_count_the_unconditional_pass_only_when_it_runs():
    from types import SimpleNamespace

    from lcm_plugin.toy.evaluate import unet_evals_per_step

    def pipe(dim):
        return SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(time_cond_proj_dim=dim)))

    assert unet_evals_per_step(pipe(None), 4.0) == 2
    assert unet_evals_per_step(pipe(None), 1.0) == 1
    assert unet_evals_per_step(pipe(256), 5.0) == 1  # a full LCM embeds w: no CFG pass


def test_full_lcm_rows_sample_the_model_itself(teacher_pipe, tmp_path, capsys):
    """`--lcm-full` scores a full LCM folder (here: the toy teacher given a zero-initialised w-embedding, as
    `train lcd` starts) on the grid its scheduler records, with the guidance embedded instead of a CFG pass."""
    from lcm_plugin.cli import main
    from lcm_plugin.toy.models import load_pipeline
    from lora_training.export import save_lcm_pipeline
    from lora_training.teachers import lcd_student_from_teacher

    student = lcd_student_from_teacher(teacher_pipe.unet, 256)
    folder = save_lcm_pipeline(
        teacher_pipe, student, tmp_path / "lcm", metadata={}, original_inference_steps=20
    )
    sched = lcm_sampler(None, (4,)).scheduler_factory(load_pipeline(folder).scheduler.config)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 749, 499, 249]  # N = 20 from the exported scheduler config
    out = tmp_path / "eval"
    args = [
        "toy",
        "evaluate",
        "--model",
        str(folder),
        "--samplers",
        "",
        "--lcm-full",
        "--lcm-steps",
        "2",
        "--lcm-guidance",
        "5",
        "--n-samples",
        "4",
        "--batch",
        "4",
        "--threads",
        "1",
        "--out-dir",
        str(out),
    ]
    assert main(args) == 0
    table = (out / "toy_eval.md").read_text()
    assert "| LCM (full model) | 2 | 5 | 2 |" in table  # 2 steps, CFG 5 embedded: 2 UNet evaluations, not 4
    assert "--lcm-full --lcm-steps 2" in table
    capsys.readouterr()
    assert main(args + ["--lcm-lora", str(out / "toy_eval.md")]) == 1
    assert "not both" in capsys.readouterr().err
