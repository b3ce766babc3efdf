"""Sampling recipes of few-step adapters: the one representation every host (diffusers, ComfyUI, A1111/Forge, the
CLI) reads to sample an adapter the way its authors do.

A recipe says which update of the engine (:mod:`lcm_plugin.core`) to run and where: the consistency function
(``lcm``: LCMScheduler's; ``tcd``: TCDScheduler's, whose gamma 0 is DDIM), gamma (TCD's eta), the boundary
condition, the starting noise, and the timesteps for each step count (the LCM grid of N, trailing spacing, or
the authors' explicit lists), plus the CFG scale, fixed step counts and LoRA scale the authors give. The data
(every value with its source) is :mod:`lcm_plugin.adapters.recipe_table`; the math stays in :mod:`lcm_plugin.core`.

CFG is in the hosts' convention: 1 means no classifier-free guidance (diffusers runs none for
``guidance_scale <= 1``, which is what the authors' ``guidance_scale=0`` does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from lcm_plugin import core

logger = logging.getLogger(__name__)

SPACINGS = ("lcm_grid", "trailing", "explicit")
EXPLICIT_GRID = (
    1000  # N = T: every training timestep is on the grid, so explicit lists pass the engine's check
)
METADATA_KEY = "lcm_plugin.recipe"  # a recipe as JSON in an adapter's safetensors metadata


@dataclass(frozen=True)
class Source:
    """Where a recipe's values come from: ``url`` and what it says there (quoted or paraphrased closely)."""

    url: str
    says: str


@dataclass(frozen=True)
class Recipe:
    """How to sample one few-step adapter (see the module docstring).

    Args:
        name: registry-style id, e.g. ``tcd``, ``hyper-nstep-4``.
        title: what it is, for people.
        consistency: ``lcm`` or ``tcd`` (:data:`lcm_plugin.core.CONSISTENCY_FUNCTIONS`).
        gamma: re-noise in [0, 1] (TCD's eta; 1 = LCM, 0 = deterministic).
        boundary_condition: LCM's c_skip/c_out (``lcm`` only); False for models that are not consistency models.
        initial_noise: ``pure`` (latent = noise) or ``sigma_max`` (k-diffusion's sigma_T * noise, Euler schedulers).
        spacing: ``lcm_grid`` (the distillation grid of ``original_inference_steps``), ``trailing``, or
            ``explicit`` (``timesteps``; other step counts fall back to trailing spacing).
        original_inference_steps: N of the LCM grid (``lcm_grid`` only).
        timesteps: explicit descending lists by step count, as the authors give them.
        fixed_steps: the step counts the adapter was distilled for (others get a warning), or None.
        step_range: the step counts the authors recommend when not fixed (inclusive).
        default_steps: what a host uses when the user does not say.
        cfg: the CFG scale the authors use (1 = none); cfg_range: the range they recommend.
        lora_scale: the LoRA weight the authors apply.
        prediction_type: the model's parameterisation if the recipe fixes it (self-distilled adapters), else None.
        authors_code: the authors' diffusers call, for people and docs.
        sources: where each value comes from; unverified: fields no public source confirms.
    """

    name: str
    title: str
    consistency: str = "lcm"
    gamma: float = 1.0
    boundary_condition: bool = True
    initial_noise: str = "pure"
    spacing: str = "lcm_grid"
    original_inference_steps: int = 50
    timesteps: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    fixed_steps: tuple[int, ...] | None = None
    step_range: tuple[int, int] = (1, 8)
    default_steps: int = 4
    cfg: float = 1.0
    cfg_range: tuple[float, float] = (1.0, 1.0)
    lora_scale: float = 1.0
    prediction_type: str | None = None
    authors_code: str = ""
    sources: tuple[Source, ...] = ()
    unverified: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        core.check_consistency(self.consistency)
        core.check_gamma(self.gamma)
        if self.spacing not in SPACINGS:
            raise ValueError(f"recipe {self.name}: spacing must be one of {SPACINGS}, got {self.spacing!r}.")
        core.training_grid(self.original_inference_steps)
        for n, ts in self.timesteps.items():
            if len(ts) != n:
                raise ValueError(f"recipe {self.name}: timesteps for {n} steps list {len(ts)} values.")
            core.validate_custom_timesteps(ts, EXPLICIT_GRID)
        if self.prediction_type is not None:
            core.check_prediction_type(self.prediction_type)
        if not self.step_range[0] <= self.default_steps <= self.step_range[1]:
            raise ValueError(
                f"recipe {self.name}: default_steps {self.default_steps} outside {self.step_range}."
            )

    # -- timesteps -------------------------------------------------------------------------------------------
    def base_timesteps(self, steps: int) -> list[int]:
        """Descending timesteps of a text-to-image run with ``steps`` model evaluations."""
        if self.spacing == "lcm_grid":
            return core.lcm_timesteps(steps, self.original_inference_steps).tolist()
        if steps in self.timesteps:
            return list(self.timesteps[steps])
        return core.trailing_timesteps(steps).tolist()

    def timesteps_for(self, steps: int, strength: float = 1.0) -> list[int]:
        """Timesteps for ``steps`` at img2img ``strength`` on this recipe's grid.

        LCM-grid recipes spend every requested step on the part of the grid the strength leaves
        (:func:`lcm_plugin.core.lcm_timesteps`); adapters distilled on fixed timesteps (trailing / explicit) keep the
        tail of their list (:func:`lcm_plugin.core.strength_tail`: 4 steps at 0.5 -> [499, 249]).
        """
        if self.spacing == "lcm_grid":
            return core.lcm_timesteps(steps, self.original_inference_steps, 1000, strength).tolist()
        return core.strength_tail(self.base_timesteps(steps), strength).tolist()

    def grid_size(self) -> int:
        """The N the engine checks the timesteps against: the LCM grid's, or 1000 (explicit timesteps)."""
        return self.original_inference_steps if self.spacing == "lcm_grid" else EXPLICIT_GRID

    # -- checks ----------------------------------------------------------------------------------------------
    def steps_warning(self, steps: int) -> str | None:
        """A one-line warning when ``steps`` is not what the adapter was made for, naming the right ones."""
        if self.fixed_steps is not None and steps not in self.fixed_steps:
            right = " or ".join(str(n) for n in self.fixed_steps)
            return (
                f"recipe {self.name}: this adapter was distilled for exactly {right} step(s), not {steps}; use "
                f"{right} steps (expect a poor image otherwise)."
            )
        low, high = self.step_range
        if self.fixed_steps is None and not low <= steps <= high:
            return f"recipe {self.name}: the authors recommend {low}-{high} steps, not {steps}."
        return None

    def cfg_warning(self, cfg: float) -> str | None:
        """A one-line warning when the CFG scale is outside what the authors recommend."""
        low, high = self.cfg_range
        if low - 1e-9 <= cfg <= high + 1e-9 or (cfg <= 1.0 and low <= 1.0):
            return None
        want = f"{low:g}" if low == high else f"{low:g}-{high:g}"
        return f"recipe {self.name}: the authors use CFG {want}, not {cfg:g} (1 = no guidance)."

    # -- what an engine call needs ---------------------------------------------------------------------------
    def engine_options(self) -> dict:
        """Keyword arguments of :class:`~lcm_plugin.diffusers_scheduler.LCMPluginScheduler` for this recipe."""
        return {
            "consistency": self.consistency,
            "gamma": self.gamma,
            "boundary_condition": self.boundary_condition,
            "initial_noise": self.initial_noise,
            "original_inference_steps": self.grid_size(),
        }

    def describe(self) -> str:
        """One line for ``adapters list``: update, timesteps, steps, CFG, LoRA scale."""
        if self.consistency == "tcd":
            update = "DDIM (TCD update, gamma 0)" if self.gamma == 0 else f"TCD, gamma {self.gamma:g}"
        elif self.gamma == 0 and not self.boundary_condition:
            update = "Euler (ODE step to x0)"
        else:
            update = "LCM" if self.gamma == 1 else f"LCM, gamma {self.gamma:g}"
        if self.spacing == "lcm_grid":
            where = f"LCM grid N={self.original_inference_steps}"
        elif self.spacing == "trailing":
            where = "trailing spacing"
        else:
            where = "timesteps " + "; ".join(",".join(map(str, ts)) for ts in self.timesteps.values())
        steps = (
            "steps " + "/".join(map(str, self.fixed_steps))
            if self.fixed_steps
            else f"steps {self.step_range[0]}-{self.step_range[1]}"
        )
        example = ",".join(
            map(str, self.base_timesteps(self.fixed_steps[0] if self.fixed_steps else self.default_steps))
        )
        low, high = self.cfg_range
        cfg = f"CFG {low:g}" if low == high else f"CFG {low:g}-{high:g}"
        return f"{update} on {where} ({example}); {steps}; {cfg}; LoRA scale {self.lora_scale:g}"

    # -- metadata --------------------------------------------------------------------------------------------
    def to_metadata(self) -> str:
        """This recipe as the JSON string stored under :data:`METADATA_KEY` (sources left out)."""
        data = {
            k: getattr(self, k)
            for k in (
                "name", "title", "consistency", "gamma", "boundary_condition", "initial_noise", "spacing",
                "original_inference_steps", "fixed_steps", "step_range", "default_steps", "cfg", "cfg_range",
                "lora_scale", "prediction_type",
            )
        }  # fmt: skip
        data["timesteps"] = {str(n): list(ts) for n, ts in self.timesteps.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_metadata(cls, text: str) -> Recipe:
        """Read :meth:`to_metadata` back; a ValueError names what is wrong."""
        try:
            data = json.loads(text)
            data["timesteps"] = {
                int(n): tuple(int(t) for t in ts) for n, ts in data.get("timesteps", {}).items()
            }
            for key in ("fixed_steps", "step_range", "cfg_range"):
                if data.get(key) is not None:
                    data[key] = tuple(data[key])
            return cls(**data, sources=(Source("adapter metadata", f"{METADATA_KEY} written by lcm-plugin"),))
        except (TypeError, KeyError, json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{METADATA_KEY} in the adapter's metadata is not a recipe ({err}).") from err


def trained_recipe(
    *,
    original_inference_steps: int,
    prediction_type: str,
    guidance_embedding: bool = False,
    w_range: tuple[float, float] | None = None,
    method: str = "lora",
) -> Recipe:
    """The recipe of what the lcm-plugin trainer distilled, for the adapter's metadata (:data:`METADATA_KEY`).

    Args:
        original_inference_steps: the grid N it was distilled on.
        prediction_type: the teacher's parameterisation (the student predicts the same).
        guidance_embedding: a full model with the w-embedding (LCD): CFG is the embedded guidance scale w + 1.
        w_range: the guidance w it was distilled with (fixed omega: (omega, omega)); sets a full model's CFG.
        method: the trainer's method (lora, lcd, lcf), for the title.
    """
    n = int(original_inference_steps)
    if guidance_embedding and w_range is not None:
        low, high = (float(w) + 1.0 for w in w_range)
        cfg, cfg_range = (low + high) / 2, (low, high)
    else:  # a LoRA distilled against the CFG-augmented teacher: no or light CFG at inference, as LCM-LoRA
        cfg, cfg_range = 1.0, (1.0, 2.0)
    return Recipe(
        name=f"lcm-{method}-n{n}",
        title=f"lcm-plugin {method} distillation on the N = {n} grid ({prediction_type})",
        original_inference_steps=n,
        step_range=(1, min(8, n)),
        default_steps=min(4, n),
        cfg=cfg,
        cfg_range=cfg_range,
        prediction_type=prediction_type,
        authors_code="LCMPluginScheduler(original_inference_steps=N, gamma=1.0)",
        sources=(Source("lcm-plugin trainer", "the training configuration of this adapter"),),
    )
