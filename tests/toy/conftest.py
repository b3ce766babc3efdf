"""Shared fixtures of the toy-world tests: the shipped teacher/judge and a random LCM-LoRA."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def teacher_path():
    from lcm_plugin.toy import paths

    if not (paths.TEACHER / "model_index.json").is_file():
        pytest.fail(f"shipped toy teacher missing at {paths.TEACHER}")
    return paths.TEACHER


@pytest.fixture(scope="session")
def judge():
    from lcm_plugin.toy import paths
    from lcm_plugin.toy.judge import load_judge

    return load_judge(paths.JUDGE)


@pytest.fixture(scope="session")
def teacher_pipe(teacher_path):
    import torch

    from lcm_plugin.toy.models import load_pipeline

    torch.set_num_threads(1)
    return load_pipeline(teacher_path)


@pytest.fixture(scope="session")
def random_lora(tmp_path_factory, teacher_path):
    """A random (non-zero) LoRA for the teacher's UNet, saved the way the trainer saves an LCM-LoRA."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from lcm_plugin.toy.models import load_pipeline

    pipe = load_pipeline(teacher_path)
    torch.manual_seed(0)
    pipe.unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights="gaussian",
        )
    )
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    )
    return out
