"""End to end: a real headless Forge on the CPU with the extension installed as a plain clone and a random checkpoint
of the full SD 1.5 shape; its API lists our sampler and scheduler, txt2img equals our diffusers pipeline on the same
weights, seed and noise, and bad input gets a clear message while the server keeps serving.

Tolerance of the image comparison: max 2 / 255 per channel, mean <= 1 (Forge truncates 255 * x to uint8 where
diffusers rounds; measured max 1, mean 0.5), while another seed differs by a mean of ~45.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lcm_plugin.adapters import recipe_table
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler
from lcm_plugin.recipes_diffusers import apply_recipe
from tests.forge.checkpoints import sd15_pipeline, write_checkpoint
from tests.forge.server import ForgeServer, request

pytestmark = pytest.mark.slow

PROMPT = "a red fox in the snow"
TXT2IMG = {"prompt": PROMPT, "steps": 4, "width": 64, "height": 64, "sampler_name": "LCM Exact", "cfg_scale": 1.0,
           "seed": 7, "override_settings": {"randn_source": "CPU"}}  # fmt: skip


@pytest.fixture(scope="module")
def forge(forge_python, forge_copy, forge_data, forge_root):
    pipe = sd15_pipeline(forge_root)
    models = forge_data / "models" / "Stable-diffusion"
    write_checkpoint(pipe, models / "tiny_sd15.safetensors")
    # the same weights, declared v-prediction in their metadata, with no .yaml: the WebUI loads them as epsilon
    write_checkpoint(pipe, models / "tiny_sd15_v.safetensors", {"lcm_plugin.prediction_type": "v_prediction"})
    # a self-distilled TCD adapter in the LoRA folder (recognised by its metadata; all-zero weights: no effect)
    from safetensors.torch import save_file

    loras = forge_data / "models" / "Lora"
    loras.mkdir(parents=True, exist_ok=True)
    zero = {
        "lora_unet_x.lora_down.weight": torch.zeros(2, 4),
        "lora_unet_x.lora_up.weight": torch.zeros(4, 2),
    }
    save_file(
        zero,
        str(loras / "my-tcd.safetensors"),
        metadata={"lcm_plugin.recipe": recipe_table.get("tcd").to_metadata()},
    )
    server = ForgeServer(
        forge_python, forge_copy, forge_data, forge_copy.parent / "forge.log", "tiny_sd15.safetensors"
    )
    try:
        server.wait_ready()
        yield server, pipe
    finally:
        server.stop()


def _image(response: dict) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(response["images"][0]))).convert("RGB")).astype(
        int
    )


def _diffusers(pipe, seed: int, gamma: float = 1.0) -> np.ndarray:
    pipe.scheduler = LCMPluginScheduler(gamma=gamma)
    out = pipe(PROMPT, num_inference_steps=4, guidance_scale=1.0, height=64, width=64,
               generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return np.array(out.images[0]).astype(int)


def _txt2img(server, **changes) -> dict:
    status, body = request(server.base, "/sdapi/v1/txt2img", {**TXT2IMG, **changes})
    assert status == 200, (body, server.tail())
    return body


def test_api_lists_our_sampler_and_scheduler(forge):
    server, _ = forge
    status, samplers = request(server.base, "/sdapi/v1/samplers")
    assert status == 200
    ours = [s for s in samplers if s["name"] == "LCM Exact"]
    assert ours and ours[0]["options"] == {"scheduler": "lcm_grid"}
    assert "LCM" in [s["name"] for s in samplers]
    status, schedulers = request(server.base, "/sdapi/v1/schedulers")
    assert (
        status == 200
        and {"lcm_grid": "LCM Grid"}.items() <= {s["name"]: s["label"] for s in schedulers}.items()
    )


def test_txt2img_equals_our_diffusers_pipeline(forge):
    server, pipe = forge
    body = _txt2img(server)
    forge_image, ours = _image(body), _diffusers(pipe, seed=7)
    assert forge_image.shape == ours.shape == (64, 64, 3)
    diff = np.abs(forge_image - ours)
    assert diff.max() <= 2 and diff.mean() <= 1.0, (diff.max(), diff.mean())
    assert np.abs(_diffusers(pipe, seed=8) - ours).mean() > 10  # the comparison can tell seeds apart
    info = body["info"]
    assert "Sampler: LCM Exact" in info and "LCM gamma: 1.0" in info and "LCM original steps: 50" in info


def test_gamma_through_the_api_equals_tcd_in_diffusers_and_is_in_the_infotext(forge):
    server, pipe = forge
    body = _txt2img(server, alwayson_scripts={"LCM Exact": {"args": [0.3, 50]}})
    diff = np.abs(_image(body) - _diffusers(pipe, seed=7, gamma=0.3))
    assert diff.max() <= 2 and diff.mean() <= 1.0, (diff.max(), diff.mean())
    assert "LCM gamma: 0.3" in body["info"]


def _diffusers_recipe(pipe, name: str, seed: int, steps: int) -> np.ndarray:
    pipe.scheduler = LCMPluginScheduler()
    call = apply_recipe(pipe, name, steps=steps)
    out = pipe(PROMPT, **call, height=64, width=64, generator=torch.Generator().manual_seed(seed))
    return np.array(out.images[0]).astype(int)


@pytest.mark.parametrize("name, steps", [("hyper-nstep-4", 4), ("lightning-2step", 2), ("dmd2-4step", 4)])
def test_recipe_through_the_api_equals_our_diffusers_helper(forge, name, steps):
    server, pipe = forge
    body = _txt2img(server, steps=steps, alwayson_scripts={"LCM Exact": {"args": [1.0, 50, name, False]}})
    diff = np.abs(_image(body) - _diffusers_recipe(pipe, name, seed=7, steps=steps))
    assert diff.max() <= 2 and diff.mean() <= 1.0, (name, diff.max(), diff.mean())
    assert f"LCM recipe: {name}" in body["info"]


def test_lora_in_the_prompt_brings_its_recipe(forge):
    server, pipe = forge
    body = _txt2img(server, prompt=PROMPT + " <lora:my-tcd:1>")
    diff = np.abs(_image(body) - _diffusers_recipe(pipe, "tcd", seed=7, steps=4))
    assert diff.max() <= 2 and diff.mean() <= 1.0, (diff.max(), diff.mean())
    assert "LCM recipe: tcd" in body["info"] and "LCM gamma: 0.3" in body["info"]


def test_seed_and_variation_seed_reproduce(forge):
    server, _ = forge
    first, again = _image(_txt2img(server, seed=11)), _image(_txt2img(server, seed=11))
    assert np.array_equal(first, again)
    variation = {"seed": 11, "subseed": 5, "subseed_strength": 0.5}
    varied, varied_again = _image(_txt2img(server, **variation)), _image(_txt2img(server, **variation))
    assert np.array_equal(varied, varied_again) and np.abs(varied - first).mean() > 1


def _init_image() -> str:
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("path", "changes", "message"),
    [
        (
            "/sdapi/v1/txt2img",
            {"steps": 60},
            "60 sampling steps is more than the 50 timesteps of the LCM grid",
        ),
        (
            "/sdapi/v1/img2img",
            {"denoising_strength": 0.0},
            "Denoising strength 0.0 leaves nothing to denoise",
        ),
        (
            "/sdapi/v1/txt2img",
            {"alwayson_scripts": {"LCM Exact": {"args": [2, 50]}}},
            "LCM gamma must be a number in",
        ),
        (
            "/sdapi/v1/txt2img",
            {"override_settings": {"randn_source": "CPU", "sd_model_checkpoint": "tiny_sd15_v"}},
            "declares prediction type 'v_prediction' in its metadata, but the WebUI loaded it as 'epsilon'",
        ),
    ],
    ids=["steps_above_n", "denoise_0", "gamma_out_of_range", "v_prediction_loaded_as_epsilon"],
)
def test_bad_input_gets_a_clear_message_and_forge_keeps_serving(forge, path, changes, message):
    server, _ = forge
    payload = {**TXT2IMG, **changes}
    if path.endswith("img2img"):
        payload["init_images"] = [_init_image()]
    status, body = request(server.base, path, payload)
    assert status >= 400 and message in str(body.get("message", body)), (status, body)
    assert request(server.base, "/sdapi/v1/txt2img", TXT2IMG)[0] == 200  # still serving
