"""What the A1111/Forge extension lets a user set, its checks in WebUI words, and its infotext keys.

Host-free (torch only), so it is tested without a WebUI. The LCM math itself stays in :mod:`lcm_plugin.core`
and :mod:`lcm_plugin.k_sampler`; the checks here only say the engine's rules in the words of the WebUI's own
fields ("Sampling steps", "Denoising strength") before the engine would refuse the same input.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from lcm_plugin import core

SAMPLER_LABEL = "LCM Exact"
SAMPLER_ALIASES = ("lcm_exact", "k_lcm_exact")
SCHEDULER_NAME = "lcm_grid"
SCHEDULER_LABEL = "LCM Grid"
SCHEDULER_ALIASES = ("LCMGrid",)

# Infotext keys (the "Steps: 4, Sampler: LCM Exact, ..." line); pasting a generation restores them.
INFOTEXT_GAMMA = "LCM gamma"
INFOTEXT_ORIGINAL_STEPS = "LCM original steps"
INFOTEXT_RECIPE = "LCM recipe"
INFOTEXT_GAMMA_OVERRIDE = "LCM gamma override"

# "LCM recipe" menu: Auto = the recipe of a known few-step LoRA in the prompt; Off = plain LCM with gamma and N below.
RECIPE_AUTO = "Auto"
RECIPE_OFF = "Off"

DEFAULT_GAMMA = 1.0
DEFAULT_ORIGINAL_INFERENCE_STEPS = 50
HOST_PREDICTION_TYPES = ("epsilon", "v_prediction")

# Checkpoint metadata that declares a prediction type: ours (lora_training.single_file) and the SAI model spec.
_PREDICTION_METADATA = {
    "lcm_plugin.prediction_type": {"epsilon": "epsilon", "v_prediction": "v_prediction"},
    "modelspec.prediction_type": {"epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction"},
}


@dataclass(frozen=True)
class LCMParams:
    """The per-generation settings of "LCM Exact" (the extension's accordion, the API, pasted infotext).

    Args:
        gamma: TCD's stochasticity, in [0, 1]: 1 = LCM (default), 0 = deterministic, 0.3 = TCD's default.
        original_inference_steps: N, the distillation grid size (50 for every public LCM / LCM-LoRA).
        recipe: ``Auto`` (the recipe of a known few-step LoRA in the prompt, else plain LCM), ``Off``, or a recipe
            name (``lcm-plugin adapters list``).
        gamma_override: use ``gamma`` instead of the recipe's own (TCD users tune it).
    """

    gamma: float = DEFAULT_GAMMA
    original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS
    recipe: str = RECIPE_AUTO
    gamma_override: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.gamma, (int, float))
            or not math.isfinite(self.gamma)
            or not 0 <= self.gamma <= 1
        ):
            raise ValueError(
                f"LCM Exact: LCM gamma must be a number in [0, 1] (1 = LCM, 0.3 = TCD, 0 = deterministic), "
                f"got {self.gamma!r}."
            )
        n = self.original_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise ValueError(
                f"LCM Exact: LCM original steps (the distillation grid N) must be a whole number in [1, 1000], "
                f"got {n!r}; every public LCM and LCM-LoRA uses 50."
            )
        if self.recipe not in recipe_choices():
            raise ValueError(
                f"LCM Exact: LCM recipe {self.recipe!r} is unknown; pick {RECIPE_AUTO}, {RECIPE_OFF} or one of "
                f"{', '.join(recipe_choices()[2:])}."
            )

    @classmethod
    def from_values(
        cls,
        gamma: Any = None,
        original_inference_steps: Any = None,
        recipe: Any = None,
        gamma_override: Any = None,
    ) -> LCMParams:
        """Parse values from the UI, the API (``alwayson_scripts``) or infotext; ``None`` means the default."""
        gamma = DEFAULT_GAMMA if gamma is None else _number(gamma, INFOTEXT_GAMMA)
        n = DEFAULT_ORIGINAL_INFERENCE_STEPS if original_inference_steps is None else original_inference_steps
        n = _number(n, INFOTEXT_ORIGINAL_STEPS)
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        recipe = RECIPE_AUTO if recipe in (None, "") else str(recipe).strip()
        override = (
            str(gamma_override).strip().lower() in ("true", "1") if gamma_override is not None else False
        )
        return cls(gamma=float(gamma), original_inference_steps=n, recipe=recipe, gamma_override=override)

    def infotext(self) -> dict[str, Any]:
        """The infotext entries that restore these settings when a generation is pasted."""
        return {INFOTEXT_GAMMA: self.gamma, INFOTEXT_ORIGINAL_STEPS: self.original_inference_steps}


def recipe_choices() -> list[str]:
    """The "LCM recipe" menu: Auto, Off, then every recipe of :mod:`lcm_plugin.adapters.recipe_table`."""
    from lcm_plugin.adapters.recipe_table import RECIPES

    return [RECIPE_AUTO, RECIPE_OFF, *RECIPES]


def _number(value: Any, name: str) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"LCM Exact: {name} must be a number, got {value!r}.")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"LCM Exact: {name} must be a number, got {value!r}.") from None


def check_request(steps: int, params: LCMParams, denoising_strength: float | None = None) -> None:
    """Refuse a step count / denoising strength the LCM grid cannot serve, in the WebUI's words.

    Args:
        steps: the "Sampling steps" of this pass (LCM runs exactly this many model evaluations).
        params: the generation's :class:`LCMParams` (its ``original_inference_steps`` is the grid size N).
        denoising_strength: img2img / hires-fix "Denoising strength"; ``None`` for text-to-image.
    """
    n = params.original_inference_steps
    if steps < 1:
        raise ValueError(f"LCM Exact: Sampling steps must be at least 1, got {steps}.")
    if steps > n:
        raise ValueError(
            f"LCM Exact: {steps} sampling steps is more than the {n} timesteps of the LCM grid "
            f"(LCM original steps = {n}). Use at most {n} steps; LCM is made for 1-8."
        )
    if denoising_strength is None:
        return
    if not 0 < denoising_strength <= 1:
        raise ValueError(
            f"LCM Exact: Denoising strength {denoising_strength} leaves nothing to denoise; set it in (0, 1] "
            "(1 repaints the whole image, lower keeps more of it)."
        )
    usable = int(n * denoising_strength)
    if usable < steps:
        need = math.ceil(steps / n * 1000) / 1000
        raise ValueError(
            f"LCM Exact: Denoising strength {denoising_strength} keeps only {usable} of the {n} LCM grid timesteps, "
            f"fewer than the {steps} sampling steps. Use at most {usable} steps or a strength of at least {need}."
        )


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """The model's cumulative alphas from its k-diffusion sigma table (:func:`core.alphas_cumprod_from_sigmas`,
    computed in float64 on the CPU), as float32."""
    return core.alphas_cumprod_from_sigmas(sigmas.detach().cpu()).float()


def declared_prediction_type(metadata: dict[str, str]) -> str | None:
    """The prediction type a checkpoint's safetensors metadata declares ("epsilon" / "v_prediction"), if any."""
    for key, values in _PREDICTION_METADATA.items():
        value = metadata.get(key)
        if value is not None and value.strip().lower() in values:
            return values[value.strip().lower()]
    return None


@functools.lru_cache(maxsize=16)
def _declared_prediction_type_cached(path: str, mtime_ns: int, size: int) -> str | None:
    from lcm_plugin.adapters.safetensors_io import read_header

    try:
        return declared_prediction_type(read_header(path).metadata)
    except (OSError, ValueError):
        return None  # not a readable safetensors file: nothing declared


def checkpoint_prediction_type(path: str | os.PathLike | None) -> str | None:
    """What the checkpoint file at ``path`` declares in its metadata (header only; pickles are never opened)."""
    if not path or not str(path).endswith(".safetensors") or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return _declared_prediction_type_cached(str(path), stat.st_mtime_ns, stat.st_size)


def check_prediction_type(host: str | None, declared: str | None, checkpoint: str = "the checkpoint") -> None:
    """Refuse a model the WebUI runs with a different parameterisation than the one its file declares.

    Args:
        host: how the WebUI interprets the model output: "epsilon", "v_prediction", or another predictor name
            (flow matching, EDM) that LCM cannot serve.
        declared: what the checkpoint declares in its metadata (:func:`checkpoint_prediction_type`), or ``None``.
        checkpoint: the checkpoint's name, for the message.
    """
    if host not in HOST_PREDICTION_TYPES:
        raise ValueError(
            f"LCM Exact samples DDPM-trained Stable Diffusion models (epsilon or v-prediction); {checkpoint} runs "
            f"as {host!r} in this WebUI (flow matching / EDM models such as Flux or SD3 are not LCM models). "
            "Pick another sampler for it."
        )
    if declared is not None and declared != host:
        fix = (
            'put a .yaml config with `parameterization: "v"` next to the checkpoint (same name) and load it again'
            if declared == "v_prediction"
            else 'remove the .yaml that sets `parameterization: "v"` next to it and load it again'
        )
        raise ValueError(
            f"LCM Exact: {checkpoint} declares prediction type {declared!r} in its metadata, but the WebUI loaded "
            f"it as {host!r}; sampling would give noise. To fix the model setting, {fix}."
        )
