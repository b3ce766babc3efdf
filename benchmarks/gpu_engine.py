"""GPU images/s: a 4-step LCM loop (CFG 1) vs a 25-step DPM-Solver++ loop with CFG 7.5, SD1.5 and SDXL UNets.

Random weights in fp16 (compute does not depend on weight values); 512x512 (SD1.5) and 1024x1024 (SDXL);
the denoising loop only (UNet + scheduler; text encoding and VAE decode are the same for both and excluded).
The bound is 50 / 4 = 12.5x (UNet evaluations). Prepared to finish in well under 8 minutes on one H100/H200:

    python -m benchmarks.gpu_engine            # prints one line per architecture, with the ratio
"""

from __future__ import annotations

import time

import torch
from diffusers import DPMSolverMultistepScheduler

from benchmarks.architectures import build_unet, unet_inputs
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler


@torch.no_grad()
def run_loop(unet, scheduler, steps: int, cfg: float, name: str, latent: int) -> None:
    batch = 2 if cfg > 1 else 1
    ctx, added = unet_inputs(name, batch, latent, torch.float16, "cuda")
    scheduler.set_timesteps(steps, device="cuda")
    x = torch.randn(1, 4, latent, latent, device="cuda", dtype=torch.float16)
    for t in scheduler.timesteps:
        inp = torch.cat([x] * batch)
        out = unet(inp, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        if batch == 2:
            cond, uncond = out.chunk(2)
            out = uncond + cfg * (cond - uncond)
        x = scheduler.step(out, t, x).prev_sample


def images_per_second(unet, make_scheduler, steps, cfg, name, latent, repeats=5) -> float:
    run_loop(unet, make_scheduler(), steps, cfg, name, latent)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run_loop(unet, make_scheduler(), steps, cfg, name, latent)
    torch.cuda.synchronize()
    return repeats / (time.perf_counter() - start)


def main() -> None:
    print(f"# gpu_engine {time.strftime('%Y-%m-%d')} {torch.cuda.get_device_name()} torch {torch.__version__}")
    config = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    for name, latent in (("sd15", 64), ("sdxl", 128)):
        unet = build_unet(name, torch.float16, "cuda")
        lcm = images_per_second(unet, lambda: LCMPluginScheduler(**config), 4, 1.0, name, latent)
        dpm = images_per_second(
            unet, lambda: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **config), 25, 7.5, name, latent
        )
        print(f"{name} {latent * 8}px: LCM 4 steps CFG 1 {lcm:.2f} img/s; DPM-Solver++ 25 steps CFG 7.5 {dpm:.2f} img/s; ratio {lcm / dpm:.2f}x (bound 12.5x)")
        del unet
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
