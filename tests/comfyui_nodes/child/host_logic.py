"""Inside ComfyUI (run by test_host_logic.py): the node pack's host-facing facts, gathered in one child process."""

from __future__ import annotations

import sys

from comfy_child import boot, write_result

ctx = boot()

import comfy.samplers  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402
from comfy_extras import nodes_model_advanced  # noqa: E402

import nodes  # noqa: E402


def pack_module(name: str):
    """A module of the loaded pack (ComfyUI imports it under a path-derived package name)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", "") and module.__file__.replace("\\", "/").endswith(
            f"/nodes/{name}.py"
        ):
            if "lcm" in module.__name__ or "custom_nodes" in module.__name__:
                return module
    raise LookupError(f"pack module nodes/{name}.py is not loaded")


host, schedule, model_patch = pack_module("host"), pack_module("schedule"), pack_module("model_patch")
import comfy.sd  # noqa: E402

ckpt = folder_paths.get_full_path("checkpoints", ctx.args[0])
model = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False, output_clip=False)[0]
# the node class ComfyUI serves (its extra-node modules are loaded by file path, not as comfy_extras.*)
core_lcm = nodes.NODE_CLASS_MAPPINGS["ModelSamplingDiscrete"]().patch(model, "lcm", False)[0]
imported_core_lcm = nodes_model_advanced.ModelSamplingDiscrete().patch(model, "lcm", False)[0]
ours = model_patch.LCMPluginModel.execute(
    model, "v_prediction", 20, 0.3, model_patch.NO_GUIDANCE_FILE, 8.0
).result[0]
ms = {
    name: m.get_model_object("model_sampling")
    for name, m in (
        ("plain", model),
        ("core_lcm", core_lcm),
        ("imported_core_lcm", imported_core_lcm),
        ("ours", ours),
    )
}


def error_of(fn, *args):
    try:
        fn(*args)
    except ValueError as err:
        return str(err)
    return None


info = {
    "applies_bc": {k: host.host_applies_boundary_condition(v) for k, v in ms.items()},
    "ours_is_v": type(ms["ours"]).__name__,
    "ours_options": ours.model_options.get("lcm_plugin"),
    "grid_4_ours": comfy.samplers.calculate_sigmas(ms["ours"], "lcm_grid", 4).tolist(),
    "grid_4_plain": comfy.samplers.calculate_sigmas(ms["plain"], "lcm_grid", 4).tolist(),
    "grid_4_core_lcm": comfy.samplers.calculate_sigmas(ms["core_lcm"], "lcm_grid", 4).tolist(),
    "too_many_steps": error_of(comfy.samplers.calculate_sigmas, ms["ours"], "lcm_grid", 21),
    "scheduler_node_denoise_0": error_of(schedule.LCMPluginScheduler.execute, model, 4, 0.0, 0),
    "ksampler_denoise_0": error_of(comfy.samplers.KSampler, ours, 4, "cpu", "lcm_exact", "lcm_grid", 0.0),
    "ksampler_denoise_0_core": len(comfy.samplers.KSampler(model, 4, "cpu", "euler", "normal", 0.0).sigmas),
    "ksampler_grid_06": comfy.samplers.KSampler(
        model, 1, "cpu", "lcm_exact", "lcm_grid", 0.6
    ).sigmas.tolist(),
    "names": {
        "KSAMPLER_NAMES": "lcm_exact" in comfy.samplers.KSAMPLER_NAMES,
        "SAMPLER_NAMES": "lcm_exact" in comfy.samplers.SAMPLER_NAMES,
        "KSampler.SAMPLERS": "lcm_exact" in comfy.samplers.KSampler.SAMPLERS,
        "SCHEDULER_NAMES": "lcm_grid" in comfy.samplers.SCHEDULER_NAMES,
        "KSampler.SCHEDULERS": "lcm_grid" in comfy.samplers.KSampler.SCHEDULERS,
        "KSamplerSelect": "lcm_exact"
        in nodes.NODE_CLASS_MAPPINGS["KSamplerSelect"].INPUT_TYPES()["required"]["sampler_name"][0],
        "BasicScheduler": "lcm_grid"
        in nodes.NODE_CLASS_MAPPINGS["BasicScheduler"].INPUT_TYPES()["required"]["scheduler"][0],
    },
    # huggingface_hub is not listed: ComfyUI imports transformers, which imports it
    "heavy_modules_loaded": sorted(
        m for m in ("diffusers", "peft", "accelerate", "lora_training") if m in sys.modules
    ),
}
full = host.training_alphas_cumprod(ms["plain"])
info["core_lcm_table_recovered"] = bool(torch.equal(host.training_alphas_cumprod(ms["core_lcm"]), full))
write_result(info)
