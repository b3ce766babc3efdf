"""LCM's per-step noise: one rule, so that a seed gives the same image in every host.

Multistep LCM (paper Algorithm 3) draws fresh Gaussian noise after every step but the last. The rule:

    generator = torch.Generator("cpu").manual_seed(seed)
    starting noise = torch.randn(shape, generator=generator)         # the first draw, float32
    noise of step i = torch.randn(shape, generator=generator)        # draw i + 2, float32, then to device/dtype

that is, the per-step noise continues the seed's CPU stream after the starting noise. This is what a diffusers
pipeline does when given ``generator=torch.Generator().manual_seed(seed)`` (the latents are its first draw and
``scheduler.step`` continues the same generator), what ComfyUI draws as the starting noise of a seed, and what
A1111/Forge's ``ImageRNG`` continues with ``next()`` under the "CPU" RNG source. The re-noise therefore never
repeats the starting noise (ComfyUI's default noise sampler, seeded with the same seed on a CPU, does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def seeded_step_noise(
    seed: int,
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> NoiseSampler:
    """A ``noise_sampler(sigma, sigma_next)`` that returns the per-step noise of ``seed`` (see the module rule).

    Args:
        seed: the host's seed (the one its starting noise was drawn with); taken modulo 2**64 as torch does.
        shape: the latent batch shape, the same shape the starting noise was drawn with.
        device, dtype: where and in which dtype the noise is returned (it is always drawn in float32 on the CPU).
    """
    generator = torch.Generator("cpu").manual_seed(int(seed) % (1 << 64))
    shape = tuple(int(s) for s in shape)
    torch.randn(shape, generator=generator)  # the starting noise: every host draws it first

    def noise_sampler(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    return noise_sampler
