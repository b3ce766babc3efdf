"""Adds ``lcm_exact`` and ``lcm_grid`` to the stock KSampler's sampler and scheduler lists, at import.

ComfyUI (a125cd84): ``KSampler.SAMPLERS`` is the list ``comfy.samplers.SAMPLER_NAMES`` (a copy of
``KSAMPLER_NAMES``), and a name is resolved as ``comfy.k_diffusion.sampling.sample_<name>``; schedulers are
``SCHEDULER_HANDLERS[name]`` plus ``SCHEDULER_NAMES``. The lists are extended in place, since nodes hold them.

The KSampler's denoise: for every scheduler ComfyUI takes the last ``steps`` of an ``int(steps / denoise)``-step
schedule, which on the LCM grid gives other timesteps than LCM's img2img rule (1 step at denoise 0.6 even becomes
text-to-image, t = 999). For ``lcm_grid`` only, ``KSampler.set_steps`` is wrapped to use the LCM rule instead (the
grid restricted to t < denoise * T, as the LCM Scheduler node and diffusers do); every other scheduler is untouched.
"""

from __future__ import annotations

import comfy.samplers
from comfy.k_diffusion import sampling as k_diffusion_sampling

from .sampler import SAMPLER_NAME, sample_lcm_exact
from .schedule import SCHEDULER_NAME, grid_sigmas, lcm_grid_scheduler


def _lcm_set_steps(set_steps):
    """KSampler.set_steps with LCM's img2img rule for ``lcm_grid`` (see the module docstring)."""

    def set_steps_lcm(self, steps, denoise=None):
        if self.scheduler != SCHEDULER_NAME or denoise is None or denoise > 0.9999:
            return set_steps(self, steps, denoise)
        if denoise <= 0.0:  # core would return the input latent unchanged, silently
            raise ValueError(f"lcm_grid: denoise must be in (0, 1], got {denoise}; 1.0 is text-to-image.")
        self.steps = steps
        self.sigmas = grid_sigmas(self.model.get_model_object("model_sampling"), steps, denoise=denoise).to(
            self.device
        )

    set_steps_lcm.lcm_plugin_wrapped = set_steps
    return set_steps_lcm


def register_ksampler_names() -> None:
    """Make ``lcm_exact`` / ``lcm_grid`` selectable in KSampler, KSamplerAdvanced, KSamplerSelect, BasicScheduler."""
    setattr(k_diffusion_sampling, f"sample_{SAMPLER_NAME}", sample_lcm_exact)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        if SAMPLER_NAME not in names:
            names.append(SAMPLER_NAME)
    comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER_NAME] = comfy.samplers.SchedulerHandler(lcm_grid_scheduler)
    if SCHEDULER_NAME not in comfy.samplers.SCHEDULER_NAMES:
        comfy.samplers.SCHEDULER_NAMES.append(SCHEDULER_NAME)
    ksampler = comfy.samplers.KSampler
    if not hasattr(ksampler.set_steps, "lcm_plugin_wrapped"):
        ksampler.set_steps = _lcm_set_steps(ksampler.set_steps)
