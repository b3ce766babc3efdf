"""The shipped toy LCM-LoRA does its job on the shipped teacher: a few LCM steps without CFG beat the teacher's
own sampler at the same number of steps with CFG (twice the UNet evaluations), by a wide margin.

A re-trained teacher without a re-distilled adapter, an adapter for another teacher, or a broken LCM scheduler
path fails here. 32 test prompts keep it to seconds; the 128-sample tables are in BENCHMARKS.md.
"""

from __future__ import annotations

import pytest

from lcm_plugin.toy import paths
from lcm_plugin.toy.evaluate import EvalConfig, evaluate_samplers, lcm_sampler, standard_samplers


@pytest.fixture(scope="module")
def lora_file():
    files = sorted(paths.LCM_LORA.glob("*.safetensors"))
    if not files:
        pytest.fail(f"no shipped toy LCM-LoRA in {paths.LCM_LORA}")
    return files[0]


def test_adapter_metadata_names_its_recipe(lora_file):
    from lcm_plugin.adapters.inspection import read_original_inference_steps
    from lcm_plugin.adapters.safetensors_io import read_header

    meta = read_header(lora_file).metadata
    assert meta["lcm_plugin.algorithm"] == "lora" and meta["lcm_plugin.architecture"] == "sd15"
    # N under the key's old name (lcm_plugin.num_ddim_timesteps): the shipped file is read as it is, not rewritten
    assert int(meta["lcm_plugin.steps"]) > 0 and read_original_inference_steps(lora_file) in (20, 50)


def test_lcm_beats_the_teacher_at_equal_steps(teacher_pipe, judge, lora_file):
    rows = evaluate_samplers(
        teacher_pipe,
        [standard_samplers(4.0, (2,))[0], lcm_sampler(str(lora_file), (1, 2))],
        judge,
        EvalConfig(n_samples=32, batch=32, kid_subset=16),
    )
    ddim2, lcm1, lcm2 = rows[1], rows[2], rows[3]
    assert (ddim2.sampler, lcm1.sampler, lcm2.steps) == ("DDIM", "LCM-LoRA", 2)
    # 128-prompt harness at shipping (BENCHMARKS.md): DDIM-2 CFG 4 FD 23.3, adherence 0.20; LCM 1 step FD 6.5,
    # 2 steps FD 6.2, adherence 0.84. 32 prompts inflate FD for every row, hence the relative margins.
    assert lcm2.fd < 0.6 * ddim2.fd, (lcm2.fd, ddim2.fd)
    assert lcm1.fd < ddim2.fd, (lcm1.fd, ddim2.fd)
    assert lcm2.adherence["all"] >= ddim2.adherence["all"] + 0.2, (lcm2.adherence, ddim2.adherence)
