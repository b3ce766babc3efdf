"""lcm-plugin: exact Latent Consistency Model sampling and distillation for Stable Diffusion checkpoints.

The consistency math lives once, in :mod:`lcm_plugin.core` (torch only). Host adapters import it:

- :mod:`lcm_plugin.diffusers_scheduler` -- ``LCMPluginScheduler``, a drop-in diffusers scheduler.
- :mod:`lcm_plugin.k_sampler` -- ``sample_lcm`` / ``lcm_sigmas``, the k-diffusion contract (ComfyUI, A1111).
"""

__version__ = "0.1.0"
