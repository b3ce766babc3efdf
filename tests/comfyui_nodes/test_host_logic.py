"""What the node pack reads from and registers into a real ComfyUI (one child process; see child/host_logic.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lcm_plugin import core
from tests.comfyui.comfy_process import run_in_comfyui

CHILD = Path(__file__).resolve().parent / "child" / "host_logic.py"


@pytest.fixture(scope="module")
def facts(tiny_checkpoint):
    ckpt = tiny_checkpoint("sd15")
    return run_in_comfyui(CHILD, ckpt.name, models={"checkpoints": [ckpt.path]}).data


def _sd_sigmas(timesteps):
    return core.timestep_to_sigma(torch.tensor(timesteps), core.sd_alphas_cumprod()).tolist() + [0.0]


def test_sampler_and_scheduler_names_reach_every_stock_list(facts):
    assert facts["names"] == dict.fromkeys(facts["names"], True)


def test_the_boundary_condition_is_skipped_only_where_core_applies_it(facts):
    assert facts["applies_bc"] == {"plain": False, "core_lcm": True, "imported_core_lcm": True, "ours": False}


def test_lcm_model_carries_prediction_type_grid_and_gamma(facts):
    assert facts["ours_is_v"] == "LCMSamplingV"
    assert facts["ours_options"] == {"original_inference_steps": 20, "gamma": 0.3}
    # lcm_grid honours the patch's N = 20 (k = 50): 4 steps -> 999, 749, 499, 249
    torch.testing.assert_close(
        torch.tensor(facts["grid_4_ours"]), torch.tensor(_sd_sigmas([999, 749, 499, 249]))
    )


def test_lcm_grid_is_the_training_grid_also_under_core_lcm_sampling(facts):
    expected = torch.tensor(_sd_sigmas([999, 759, 499, 259]))
    torch.testing.assert_close(torch.tensor(facts["grid_4_plain"]), expected)
    torch.testing.assert_close(torch.tensor(facts["grid_4_core_lcm"]), expected)
    assert facts["core_lcm_table_recovered"]


def test_bad_settings_say_what_to_do(facts):
    assert "cannot exceed original_inference_steps (20)" in facts["too_many_steps"]
    assert "int(steps / denoise)" in facts["too_many_steps"]
    assert "denoise must be in (0, 1]" in facts["scheduler_node_denoise_0"]
    assert "lcm_grid: denoise must be in (0, 1]" in facts["ksampler_denoise_0"]
    assert facts["ksampler_denoise_0_core"] == 0  # other schedulers keep ComfyUI's own behaviour


def test_ksampler_denoise_uses_the_lcm_img2img_rule_for_lcm_grid(facts):
    # 1 step at denoise 0.6: LCM's rule gives t = 599 (ComfyUI's truncation would give t = 999, text-to-image)
    torch.testing.assert_close(torch.tensor(facts["ksampler_grid_06"]), torch.tensor(_sd_sigmas([599])))


def test_nothing_heavy_is_imported_at_comfyui_start_up(facts):
    assert facts["heavy_modules_loaded"] == []
