"""Adds ``lcm_exact`` and ``lcm_grid`` to the stock KSampler's sampler and scheduler lists, at import.

ComfyUI (a125cd84): ``KSampler.SAMPLERS`` is the list ``comfy.samplers.SAMPLER_NAMES`` (a copy of
``KSAMPLER_NAMES``), and a name is resolved as ``comfy.k_diffusion.sampling.sample_<name>``; schedulers are
``SCHEDULER_HANDLERS[name]`` plus ``SCHEDULER_NAMES``. The lists are extended in place, since nodes hold them.
"""

from __future__ import annotations

import comfy.samplers
from comfy.k_diffusion import sampling as k_diffusion_sampling

from .sampler import SAMPLER_NAME, sample_lcm_exact
from .schedule import SCHEDULER_NAME, lcm_grid_scheduler


def register_ksampler_names() -> None:
    """Make ``lcm_exact`` / ``lcm_grid`` selectable in KSampler, KSamplerAdvanced, KSamplerSelect, BasicScheduler."""
    setattr(k_diffusion_sampling, f"sample_{SAMPLER_NAME}", sample_lcm_exact)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)
    comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER_NAME] = comfy.samplers.SchedulerHandler(lcm_grid_scheduler)
    if SCHEDULER_NAME not in comfy.samplers.SCHEDULER_NAMES:
        comfy.samplers.SCHEDULER_NAMES.append(SCHEDULER_NAME)
