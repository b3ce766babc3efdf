"""How a host resolves the LCM settings of one sampling run (shared by the ComfyUI nodes and the WebUI).

A sampler's own inputs win; then the settings a model patch carries (ComfyUI's LCM Model node); then the
defaults of every public LCM: gamma 1 (plain LCM) and the distillation grid N = 50.
"""

from __future__ import annotations

from collections.abc import Mapping

from lcm_plugin import core

DEFAULT_ORIGINAL_INFERENCE_STEPS = 50


ENGINE_DEFAULTS = {"consistency": "lcm", "apply_boundary_condition": True, "initial_noise": "pure"}
"""The update, boundary condition and text-to-image start of plain LCM (a recipe may set others)."""


def resolve_lcm_options(
    patched: Mapping | None = None,
    *,
    gamma: float | None = None,
    original_inference_steps: int | None = None,
    **engine,
) -> dict:
    """The settings of one sampling run, validated; None means "not given here".

    Returns ``original_inference_steps`` (N), ``gamma`` and the engine settings of :data:`ENGINE_DEFAULTS`
    (``consistency``, ``apply_boundary_condition``, ``initial_noise``: a few-step adapter's recipe may change them).

    Args:
        patched: settings carried by the model (the same keys), or None.
        gamma: the sampler's own gamma in [0, 1] (1 = LCM, 0.3 = TCD, 0 = deterministic), or None.
        original_inference_steps: the schedule's own grid size N, or None.
        engine: the sampler's own engine settings (None values are ignored).
    """
    patched = patched or {}
    unknown = set(engine) - set(ENGINE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown LCM settings {sorted(unknown)}; use {sorted(ENGINE_DEFAULTS)}.")
    options = {
        "original_inference_steps": original_inference_steps
        or patched.get("original_inference_steps")
        or DEFAULT_ORIGINAL_INFERENCE_STEPS,
        "gamma": patched.get("gamma", 1.0) if gamma is None else gamma,
    }
    for key, default in ENGINE_DEFAULTS.items():
        options[key] = engine[key] if engine.get(key) is not None else patched.get(key, default)
    core.check_gamma(options["gamma"])
    core.training_grid(options["original_inference_steps"])  # validates N
    core.check_consistency(options["consistency"])
    return options
