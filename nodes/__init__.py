"""The lcm-plugin node pack for ComfyUI (V3 node API), one module per node family.

- ``schedule``: LCM Scheduler (SIGMAS on the distillation grid) and the ``lcm_grid`` KSampler scheduler.
- ``sampler``: LCM Sampler (SAMPLER, with TCD's gamma) and the ``lcm_exact`` KSampler sampler.
- ``model_patch``: LCM Model (prediction type, grid N, gamma, the guidance-scale embedding of full LCMs).
- ``lora_loader``: LCM-LoRA Loader (any LoRA format, registry downloads into the ``loras`` folder).
- ``ksampler_names``: registers the sampler and scheduler names into the stock KSampler's lists.

Every node is a ``define_schema`` plus an ``execute`` that calls ``lcm_plugin`` and returns: the LCM math lives
there, once, for every host.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import lora_loader, model_patch, sampler, schedule


class LCMPluginExtension(ComfyExtension):
    """The node list ComfyUI reads through ``comfy_entrypoint``."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*schedule.NODES, *sampler.NODES, *model_patch.NODES, *lora_loader.NODES]


async def comfy_entrypoint() -> LCMPluginExtension:
    """ComfyUI's V3 entry point."""
    return LCMPluginExtension()
