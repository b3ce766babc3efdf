"""Scheduler cost: our step vs diffusers.LCMScheduler.step, and the share of a 4-step loop spent outside the UNet.

Run: python benchmarks/engine_overhead.py [--skip-sd15]
Everything is measured side by side in one process (interleaved repeats) and reported as ratios.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from diffusers import LCMScheduler, UNet2DConditionModel

from benchmarks.architectures import SD15_UNET
from lcm_plugin.diffusers_scheduler import LCMPluginScheduler


def time_steps(scheduler, shape, repeats: int) -> float:
    """Median seconds of one full 4-step scheduler loop (set_timesteps + 4 x step), model output fixed."""
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    model_output = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(repeats):
        gen = torch.Generator().manual_seed(2)
        x = x0
        start = time.perf_counter()
        scheduler.set_timesteps(4)
        for t in scheduler.timesteps:
            x = scheduler.step(model_output, t, x, generator=gen).prev_sample
        times.append((time.perf_counter() - start) / 4)
    return statistics.median(times)


def step_ratio(shape, rounds: int = 5, repeats: int = 200) -> tuple[float, float]:
    ours, ref = LCMPluginScheduler(), LCMScheduler()
    t_ours, t_ref = [], []
    for _ in range(rounds):  # interleave to share machine noise
        t_ours.append(time_steps(ours, shape, repeats))
        t_ref.append(time_steps(ref, shape, repeats))
    return statistics.median(t_ours), statistics.median(t_ref)


@torch.no_grad()
def loop_overhead(unet, latent_size: int, context_dim: int, rounds: int) -> tuple[float, float]:
    """(seconds of a 4-step LCM loop, fraction of it spent outside the UNet), batch 1, CFG 1."""
    sched = LCMPluginScheduler()
    cond = torch.randn(1, 77, context_dim)
    totals, fractions = [], []
    for r in range(rounds):
        gen = torch.Generator().manual_seed(r)
        x = torch.randn(1, 4, latent_size, latent_size, generator=gen)
        in_unet = 0.0
        start = time.perf_counter()
        sched.set_timesteps(4)
        for t in sched.timesteps:
            u0 = time.perf_counter()
            out = unet(x, t, encoder_hidden_states=cond).sample
            in_unet += time.perf_counter() - u0
            x = sched.step(out, t, x, generator=gen).prev_sample
        total = time.perf_counter() - start
        totals.append(total)
        fractions.append((total - in_unet) / total)
    return statistics.median(totals), statistics.median(fractions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sd15", action="store_true", help="skip the full-size SD1.5 UNet (about 1 minute)")
    args = parser.parse_args()
    torch.manual_seed(0)  # random weights for the cost benchmark only
    print(f"# engine_overhead  {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    for shape in [(1, 4, 64, 64), (4, 4, 128, 128)]:
        ours, ref = step_ratio(shape)
        print(f"step {tuple(shape)}: ours {ours * 1e6:.1f} us, diffusers.LCMScheduler {ref * 1e6:.1f} us, ratio ours/theirs {ours / ref:.3f}")
    tiny = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()
    total, frac = loop_overhead(tiny, 64, 32, rounds=10)
    print(f"4-step loop, tiny UNet, 64x64 latents: {total * 1e3:.1f} ms, outside the UNet {frac * 100:.2f}%")
    if not args.skip_sd15:
        sd15 = UNet2DConditionModel(**SD15_UNET).eval()
        total, frac = loop_overhead(sd15, 64, 768, rounds=2)
        print(f"4-step loop, SD1.5 UNet (random weights), 64x64 latents: {total:.2f} s, outside the UNet {frac * 100:.3f}%")


if __name__ == "__main__":
    main()
