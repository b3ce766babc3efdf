"""Runs inside Forge's own venv, in a copy of Forge: samples through Forge's real sampler classes on a tiny UNet.

Not a test module (pytest never imports it): ``tests/forge/test_forge_modules.py`` runs it as

    <forge venv>/bin/python tests/forge/forge_driver.py REPO WORK        (cwd: a copy of Forge)

It imports Forge's modules (``modules/sd_samplers*.py``, ``modules/sd_schedulers.py``, its CFG denoiser and
``backend`` sampling function), loads ``REPO/scripts/lcm_plugin_webui.py`` the way the WebUI loads extension
scripts, and runs every case of ``WORK/cases.json`` with the tiny diffusers UNet in ``WORK/unet`` behind Forge's
``KModel`` / ``UnetPatcher`` (the predictor Forge builds for an SD checkpoint of that prediction type). It writes
``WORK/lists.json`` (what the UI and the API list), ``WORK/results.safetensors`` (one latent per case) and
``WORK/errors.json`` (the messages of the bad-input cases).
"""

from __future__ import annotations

import json
import os
import sys
import types

REPO, WORK = sys.argv[1], sys.argv[2]
FORGE = os.getcwd()
sys.argv = [sys.argv[0], "--always-cpu", "--skip-version-check", "--data-dir", os.path.join(WORK, "data")]
sys.path.insert(0, FORGE)

from modules_forge.initialization import initialize_forge  # noqa: E402

initialize_forge()
from modules import initialize  # noqa: E402

initialize.imports()

import torch  # noqa: E402
from backend.patcher.unet import UnetPatcher  # noqa: E402
from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: E402
from modules import (  # noqa: E402
    infotext_utils,
    prompt_parser,
    rng,
    script_loading,
    scripts,
    sd_samplers,
    sd_samplers_kdiffusion,
    sd_schedulers,
    shared,
)
from modules.api.api import Api  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

extension = script_loading.load_module(os.path.join(REPO, "scripts", "lcm_plugin_webui.py"))
script_classes = [
    v for v in vars(extension).values() if isinstance(v, type) and issubclass(v, scripts.Script)
]


class ForgeUNetAdapter(torch.nn.Module):
    """A diffusers UNet behind the call convention of Forge's own UNet (what ``KModel.apply_model`` calls)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.storage_dtype = self.computation_dtype = torch.float32
        self.load_device = self.offload_device = self.initial_device = torch.device("cpu")

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        return self.unet(x, timesteps, encoder_hidden_states=context).sample


def tiny_sd_model(prediction_type: str):
    """The attributes of ``shared.sd_model`` that Forge's sampling path reads, around the tiny UNet."""
    unet = UNet2DConditionModel.from_pretrained(os.path.join(WORK, "unet")).eval()
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )
    patcher = UnetPatcher.from_model(model=ForgeUNetAdapter(unet), diffusers_scheduler=scheduler, config=None)
    return types.SimpleNamespace(
        is_sdxl=False, forge_objects=types.SimpleNamespace(unet=patcher), sd_checkpoint_info=None
    )


def processing(case: dict, steps: int):
    """The fields of a StableDiffusionProcessing object that the sampler, its CFG denoiser and Forge read."""
    p = types.SimpleNamespace(
        steps=steps, scheduler=case.get("scheduler", "Automatic"), hr_scheduler=None, is_hr_pass=False,
        sampler_noise_scheduler_override=None, extra_generation_params={}, cfg_scale=case.get("cfg", 1.0),
        eta=None, s_min_uncond=0.0, denoising_strength=case.get("strength", 1.0), seeds=[case["seed"]],
        refiner_switch_at=None, refiner_checkpoint_info=None, scripts=None, image_cfg_scale=None,
        lcm_plugin_values={"gamma": case.get("gamma"), "original_inference_steps": case.get("original_steps"),
                           "recipe": case.get("recipe"), "gamma_override": case.get("gamma_override")},
        prompt=case.get("prompt", "a fox"),
    )  # fmt: skip
    case["comments"] = []
    p.comment = case["comments"].append  # processing.comment: the lines shown under the image
    p.rng = rng.ImageRNG((4, 8, 8), [case["seed"]], subseeds=[case.get("subseed", 0)],
                         subseed_strength=case.get("subseed_strength", 0.0))  # fmt: skip
    return p


def conditioning(tensors: dict, steps: int):
    cond = prompt_parser.MulticondLearnedConditioning(shape=(1,), batch=[[
        prompt_parser.ComposableScheduledPromptConditioning([prompt_parser.ScheduledPromptConditioning(steps, tensors["cond"][0])])
    ]])  # fmt: skip
    uncond = [[prompt_parser.ScheduledPromptConditioning(steps, tensors["uncond"][0])]]
    return cond, uncond


def run_case(case: dict, tensors: dict) -> torch.Tensor:
    shared.sd_model = tiny_sd_model(case.get("prediction_type", "epsilon"))
    steps = case["steps"]
    p = processing(case, steps)
    sampler = sd_samplers.create_sampler(case.get("sampler", "LCM Exact"), shared.sd_model)
    cond, uncond = conditioning(tensors, steps)
    with torch.no_grad():
        if case.get("strength", 1.0) == 1.0 and not case.get("img2img"):
            out = sampler.sample(p, p.rng.next(), cond, uncond, steps=steps)
        else:
            noise = p.rng.next()
            out = sampler.sample_img2img(p, tensors["x0"].clone(), noise, cond, uncond, steps=None)
    case["infotext"] = {k: str(v) for k, v in p.extra_generation_params.items()}
    return out


def main() -> None:
    shared.opts.data["randn_source"] = "CPU"
    cases = json.load(open(os.path.join(WORK, "cases.json")))
    tensors = load_file(os.path.join(WORK, "inputs.safetensors"))
    api = Api.__new__(Api)  # the two list endpoints read module state only
    lists = {
        "all_samplers": [s.name for s in sd_samplers.all_samplers],
        "visible_samplers": sd_samplers.visible_sampler_names(),
        "samplers_map": dict(sd_samplers.samplers_map),
        "scheduler_labels": [s.label for s in sd_schedulers.schedulers],
        "schedulers_map_keys": list(sd_schedulers.schedulers_map),
        "k_diffusion_scheduler": sorted(sd_samplers_kdiffusion.k_diffusion_scheduler),
        "api_samplers": api.get_samplers(),
        "api_schedulers": [
            {k: v for k, v in s.items() if k != "need_inner_model"} for s in api.get_schedulers()
        ],
        "script_titles": [c().title() for c in script_classes],
        "resolved": list(
            sd_samplers.get_sampler_and_scheduler("LCM Exact", "LCM Grid", convert_automatic=False)
        ),
        "parsed_infotext": {
            k: str(v)
            for k, v in infotext_utils.parse_generation_parameters(
                "a fox\nSteps: 4, Sampler: LCM Exact, Schedule type: LCM Grid, CFG scale: 1.5, Seed: 7, "
                "LCM gamma: 0.3, LCM original steps: 50"
            ).items()
        },  # fmt: skip
    }
    results, errors = {}, {}
    for case in cases:
        try:
            results[case["name"]] = run_case(case, tensors).contiguous()
        except ValueError as err:
            errors[case["name"]] = str(err)
    lists["infotext"] = {c["name"]: c.get("infotext", {}) for c in cases}
    lists["comments"] = {c["name"]: c.get("comments", []) for c in cases}
    # "LCM Grid" picked for another sampler: the schedule Forge's own Euler would walk
    euler = sd_samplers.create_sampler("Euler", shared.sd_model)
    p = processing({"seed": 0, "scheduler": "LCM Grid"}, 4)
    lists["euler_lcm_grid_sigmas"] = euler.get_sigmas(p, 4).tolist()
    save_file(results, os.path.join(WORK, "results.safetensors"))
    json.dump(lists, open(os.path.join(WORK, "lists.json"), "w"), indent=1, default=str)
    json.dump(errors, open(os.path.join(WORK, "errors.json"), "w"), indent=1)


main()
