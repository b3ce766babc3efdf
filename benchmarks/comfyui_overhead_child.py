"""Inside ComfyUI (run by benchmarks/comfyui_nodes.py): sampler wall time outside the UNet, ours vs core's lcm.

Each run is ``comfy.sample.sample`` on the same model, seed and steps; the UNet forward is timed by wrapping the
model's ``diffusion_model.forward``, so "outside" = total - UNet = the sampler, schedule, CFG and ComfyUI glue.
Repetitions of the two samplers are interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import time

from comfy_child import boot, write_result

ctx = boot()

import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

steps_list = [int(s) for s in ctx.args[1].split(",")]
repeats = int(ctx.args[2])
model = comfy.sd.load_checkpoint_guess_config(
    folder_paths.get_full_path("checkpoints", ctx.args[0]), output_vae=False, output_clip=False
)[0]
tensors = ctx.input_tensors()
positive, negative = [[tensors["cond"], {}]], [[tensors["uncond"], {}]]
latent = torch.zeros(1, 4, 8, 8)
noise = comfy.sample.prepare_noise(latent, 0)
unet = model.model.diffusion_model
unet_seconds = [0.0]
forward = unet.forward


def timed_forward(*args, **kwargs):
    start = time.perf_counter()
    try:
        return forward(*args, **kwargs)
    finally:
        unet_seconds[0] += time.perf_counter() - start


unet.forward = timed_forward
SAMPLERS = {
    "core lcm + sgm_uniform": ("lcm", "sgm_uniform"),
    "ours lcm_exact + lcm_grid": ("lcm_exact", "lcm_grid"),
}
results = {name: {s: {"total": [], "unet": []} for s in steps_list} for name in SAMPLERS}
for _ in range(2):  # warm-up: first calls load the model and allocate
    for sampler, scheduler in SAMPLERS.values():
        comfy.sample.sample(
            model, noise, 4, 1.0, sampler, scheduler, positive, negative, latent, disable_pbar=True, seed=0
        )
for _ in range(repeats):
    for steps in steps_list:
        for name, (sampler, scheduler) in SAMPLERS.items():
            unet_seconds[0] = 0.0
            start = time.perf_counter()
            comfy.sample.sample(model, noise, steps, 1.0, sampler, scheduler, positive, negative, latent,
                                disable_pbar=True, seed=0)  # fmt: skip
            results[name][steps]["total"].append(time.perf_counter() - start)
            results[name][steps]["unet"].append(unet_seconds[0])
write_result({"results": results, "torch_threads": torch.get_num_threads()})
