"""The trainer writes the recipe of what it trained into the adapter's metadata, so every host recognises it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lcm_plugin.adapters.recipes import trained_recipe
from lcm_plugin.adapters.recognition import recognise
from lora_training.config import TrainConfig
from lora_training.trainer import Trainer
from tests.training.helpers import base_config, save_tiny_pipeline, write_image_folder

# the grid size is being renamed num_ddim_timesteps -> original_inference_steps in TrainConfig (one name per concept)
GRID_FIELD = next(
    f.name for f in fields(TrainConfig) if f.name in ("original_inference_steps", "num_ddim_timesteps")
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    pipe_dir = save_tiny_pipeline(tmp / "pipe", prediction_type="v_prediction")
    data_dir = write_image_folder(tmp / "data", n=4)
    cfg = base_config(tmp, pipe_dir, data_dir, max_train_steps=1, validation_steps=0, **{GRID_FIELD: 20})
    return cfg, Trainer(cfg).train()


def test_both_lora_files_carry_the_recipe_of_the_run(run):
    _, run = run
    for key in ("diffusers_lora", "kohya_lora"):
        found = recognise(run.outputs[key])
        assert found.how == "metadata", key
        recipe = found.recipe
        assert (recipe.name, recipe.original_inference_steps, recipe.prediction_type) == (
            "lcm-lora-n20",
            20,
            "v_prediction",
        )
        assert (recipe.consistency, recipe.gamma, recipe.cfg, recipe.cfg_range) == (
            "lcm",
            1.0,
            1.0,
            (1.0, 2.0),
        )
        assert recipe.timesteps_for(4) == [999, 749, 499, 249]  # the N = 20 grid (k = 50)


def test_the_helper_samples_a_trained_adapter_on_its_grid_and_parameterisation(run):
    from diffusers import StableDiffusionPipeline

    from lcm_plugin.recipes_diffusers import apply_recipe

    cfg, run = run
    pipe = StableDiffusionPipeline.from_pretrained(str(cfg.pretrained_model))
    call = apply_recipe(pipe, run.outputs["diffusers_lora"], steps=2)
    assert call["timesteps"] == [999, 499] and pipe.scheduler.config.original_inference_steps == 20
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_full_model_recipe_uses_the_embedded_guidance():
    recipe = trained_recipe(original_inference_steps=50, prediction_type="epsilon", guidance_embedding=True,
                            w_range=(3.0, 15.0), method="lcd")  # fmt: skip
    assert (recipe.cfg, recipe.cfg_range, recipe.name) == (10.0, (4.0, 16.0), "lcm-lcd-n50")
