"""ComfyUI entry point: the repository root is the lcm-plugin node pack.

``git clone`` this repository into ``ComfyUI/custom_nodes/`` (or install it from the Comfy Registry) and restart
ComfyUI: it imports this file, which exposes the nodes of ``nodes/`` through ComfyUI's V3 node API
(``comfy_entrypoint``) and adds the ``lcm_exact`` sampler and ``lcm_grid`` scheduler to the stock KSampler.

The engine (``lcm_plugin``) needs only torch, numpy and safetensors, which ComfyUI has, so no pip step is needed:
when ``lcm_plugin`` is not installed, this folder is appended to ``sys.path`` (appended, so nothing here shadows
another package). Outside ComfyUI (pytest, the pip package, the CLI) this file does nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _comfyui_has_v3() -> bool:
    try:
        return importlib.util.find_spec("comfy_api.latest") is not None
    except ModuleNotFoundError:
        return False


if "comfy" in sys.modules or importlib.util.find_spec("comfy") is not None:
    if importlib.util.find_spec("lcm_plugin") is None:
        sys.path.append(_ROOT)
    if _comfyui_has_v3():
        from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI looks this name up)
        from .nodes.ksampler_names import register_ksampler_names

        register_ksampler_names()
    else:
        logging.getLogger(__name__).error(
            "lcm-plugin needs ComfyUI's V3 node API (comfy_api.latest, ComfyUI >= 0.3.50); update ComfyUI."
        )
