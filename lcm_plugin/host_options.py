"""How a host resolves the LCM settings of one sampling run (shared by the ComfyUI nodes and the WebUI).

A sampler's own inputs win; then the settings a model patch carries (ComfyUI's LCM Model node); then the
defaults of every public LCM: gamma 1 (plain LCM) and the distillation grid N = 50.
"""

from __future__ import annotations

from collections.abc import Mapping

from lcm_plugin import core

DEFAULT_ORIGINAL_INFERENCE_STEPS = 50


def resolve_lcm_options(
    patched: Mapping | None = None,
    *,
    gamma: float | None = None,
    original_inference_steps: int | None = None,
) -> dict:
    """``{"original_inference_steps": N, "gamma": g}``, validated; None means "not given here".

    Args:
        patched: settings carried by the model (keys ``original_inference_steps``, ``gamma``), or None.
        gamma: the sampler's own gamma in [0, 1] (1 = LCM, 0.3 = TCD, 0 = deterministic), or None.
        original_inference_steps: the schedule's own grid size N, or None.
    """
    patched = patched or {}
    options = {
        "original_inference_steps": original_inference_steps
        or patched.get("original_inference_steps")
        or DEFAULT_ORIGINAL_INFERENCE_STEPS,
        "gamma": patched.get("gamma", 1.0) if gamma is None else gamma,
    }
    core.check_gamma(options["gamma"])
    core.training_grid(options["original_inference_steps"])  # validates N
    return options
