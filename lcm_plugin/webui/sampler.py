"""The "LCM Exact" sampler and the "LCM Grid" scheduler, as A1111 (>= 1.9) / Forge classes.

Imported only inside a WebUI (it imports the WebUI's ``modules``). Everything LCM is delegated:
:func:`lcm_plugin.k_sampler.lcm_sigmas` makes the on-grid schedule, :func:`lcm_plugin.k_sampler.sample_lcm`
samples (applying the boundary condition itself, which Forge's denoiser skips), and the per-step noise is the
WebUI's own seeded noise (``p.rng.next()``: under the "CPU" RNG source that is the seed's CPU stream continued
after the starting noise, the rule of :mod:`lcm_plugin.core.step_noise`; variation seeds ride along).

What the subclass changes in the host's ``KDiffusionSampler`` and why:

- ``get_sigmas``: with "LCM Grid" (the default for this sampler), text-to-image gets ``lcm_sigmas(steps)``;
  img2img and hires fix get ``lcm_sigmas(steps, denoise=strength)`` -- exactly "Sampling steps" steps on the part
  of the grid the strength leaves, where the host would take the tail of a text-to-image schedule. The host keeps
  ``sigmas[steps - t_enc - 1:]`` of what ``get_sigmas`` returns, so the LCM schedule is put exactly there.
- text-to-image starts from pure noise at the first timestep (noise * sqrt(1 + sigma^2) in the host's space, its own
  "SGM noise multiplier"), as LCM and diffusers do; the host's default start is noise * sigma.
- few-step adapters: with a recipe (the "LCM recipe" menu, or "Auto" and a known LoRA in the prompt:
  :mod:`lcm_plugin.webui.recipes`) the schedule, update, gamma and start are the recipe's
  (:func:`lcm_plugin.recipe_sampling.sampling_plan`): TCD, Hyper-SD, PCM, SDXL-Lightning and DMD2 sample exactly as
  their authors' diffusers code. A step count or CFG scale the authors do not use gets a warning in the UI.
"""

from __future__ import annotations

import logging

import torch
from modules import sd_samplers_common, sd_samplers_kdiffusion, shared

from lcm_plugin.k_sampler import lcm_sigmas, sample_lcm
from lcm_plugin.recipe_sampling import sampling_plan
from lcm_plugin.webui.params import (
    INFOTEXT_GAMMA,
    INFOTEXT_GAMMA_OVERRIDE,
    INFOTEXT_RECIPE,
    SCHEDULER_LABEL,
    SCHEDULER_NAME,
    LCMParams,
    alphas_cumprod_from_sigmas,
    check_prediction_type,
    check_request,
    checkpoint_prediction_type,
)
from lcm_plugin.webui.recipes import ChosenRecipe, choose_recipe

logger = logging.getLogger(__name__)


def lcm_grid_scheduler(n, sigma_min=None, sigma_max=None, inner_model=None, device=None) -> torch.Tensor:
    """Scheduler "LCM Grid" for any sampler: ``n`` sigmas on the LCM grid (N = 50) plus a final 0."""
    check_request(int(n), LCMParams())
    return lcm_sigmas(int(n), alphas_cumprod_from_sigmas(inner_model.sigmas), device=device)


def generation_params(p) -> LCMParams:
    """The generation's LCM settings: what the "LCM Exact" script stored on ``p``, else the defaults."""
    values = getattr(p, "lcm_plugin_values", None) or {}
    return LCMParams.from_values(
        values.get("gamma"),
        values.get("original_inference_steps"),
        values.get("recipe"),
        values.get("gamma_override"),
    )


def lora_folders() -> list[str]:
    """The WebUI's LoRA folders: ``--lora-dir`` (A1111/Forge's LoRA extension) and ``models/Lora``."""
    import os

    from modules import paths

    folders = [getattr(shared.cmd_opts, "lora_dir", None), os.path.join(paths.models_path, "Lora")]
    return [f for i, f in enumerate(folders) if f and f not in folders[:i]]


def known_lora_files() -> dict[str, str]:
    """name -> file of the WebUI's own LoRA list (the built-in LoRA extension's ``networks``), when loaded."""
    import sys

    networks = sys.modules.get("networks")
    available = getattr(networks, "available_networks", None) or {}
    return {
        name: getattr(net, "filename", None)
        for name, net in available.items()
        if getattr(net, "filename", None)
    }


def chosen_recipe(p) -> ChosenRecipe:
    """The recipe of this generation (cached on ``p``: the hires pass reuses it), its notices shown once."""
    chosen = getattr(p, "lcm_plugin_recipe", None)
    if chosen is None:
        prompt = getattr(p, "prompt", "") or ""
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
        chosen = choose_recipe(generation_params(p), prompt, lora_folders(), known_lora_files())
        for line in chosen.notices:
            logger.warning("%s", line)
            _comment(p, line)
        p.lcm_plugin_recipe = chosen
    return chosen


def _comment(p, line: str) -> None:
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(line)  # shown under the image in the UI, and in the API's "info"


def host_prediction_type(model_wrap, sd_model) -> str | None:
    """How the WebUI turns this model's output into x0: Forge's predictor, else A1111's parameterization."""
    predictor = getattr(model_wrap, "predictor", None)
    if predictor is not None:
        return getattr(predictor, "prediction_type", None)
    return "v_prediction" if getattr(sd_model, "parameterization", "eps") == "v" else "epsilon"


def scheduler_name(p, default: str) -> str:
    """The internal name of the scheduler this pass uses ("Automatic" resolves to ``default``)."""
    label = (
        getattr(p, "hr_scheduler", None) if getattr(p, "is_hr_pass", False) else getattr(p, "scheduler", None)
    )
    label = label or "Automatic"
    if label == "Automatic":
        return default
    try:
        from modules import sd_schedulers
    except ImportError:  # A1111 < 1.9: no schedulers, the sampler's own grid
        return default
    found = sd_schedulers.schedulers_map.get(label)
    return found.name if found is not None else label


class LCMExactSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    """The host's k-diffusion sampler class running :func:`lcm_plugin.k_sampler.sample_lcm` (see the module doc)."""

    def __init__(self, sd_model):
        self._mode: str | None = None  # "txt2img" or "img2img" while sampling
        self._img2img_steps_arg: int | None = None
        self._lcm_steps: int | None = None
        self._plan = None  # the recipe's sampling plan of this pass, when a recipe applies
        super().__init__(self.sample_lcm_exact, sd_model)

    # -- the host's entry points -------------------------------------------------------------------------------
    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        self._check_model()
        self._mode, self._lcm_steps, self._plan = "txt2img", None, None
        try:
            return super().sample(p, x, conditioning, unconditional_conditioning, steps, image_conditioning)
        finally:
            self._mode = None

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        self._check_model()
        self._mode, self._lcm_steps, self._img2img_steps_arg, self._plan = "img2img", None, steps, None
        try:
            return super().sample_img2img(
                p, x, noise, conditioning, unconditional_conditioning, steps, image_conditioning
            )
        finally:
            self._mode = None

    def get_sigmas(self, p, steps):
        params = generation_params(p)
        default = self.config.options.get("scheduler", SCHEDULER_NAME) if self.config else SCHEDULER_NAME
        if (
            getattr(p, "sampler_noise_scheduler_override", None)
            or scheduler_name(p, default) != SCHEDULER_NAME
        ):
            return super().get_sigmas(
                p, steps
            )  # another schedule: sample_lcm snaps it to the grid, with a warning
        if not getattr(p, "is_hr_pass", False) and getattr(p, "scheduler", "Automatic") not in (
            None,
            "Automatic",
        ):
            p.extra_generation_params["Schedule type"] = SCHEDULER_LABEL
        alphas_cumprod = self._alphas_cumprod()
        n = params.original_inference_steps
        chosen = chosen_recipe(p)
        requested = steps if self._mode != "img2img" else (self._img2img_steps_arg or p.steps)
        strength = p.denoising_strength if self._mode == "img2img" else None
        if chosen.recipe is not None:
            self._plan = self._recipe_plan(p, chosen, requested, strength)
            ours = self._plan.sigmas.to(device=alphas_cumprod.device)
        else:
            check_request(requested, params, strength)
            ours = lcm_sigmas(requested, alphas_cumprod, denoise=strength or 1.0, original_inference_steps=n)
        self._lcm_steps = len(ours) - 1
        if self._mode != "img2img":
            return ours
        host_steps, t_enc = sd_samplers_common.setup_img2img_steps(p, self._img2img_steps_arg)
        return torch.cat([ours[:1].repeat(host_steps - t_enc - 1), ours])

    def launch_sampling(self, steps, func):
        return super().launch_sampling(self._lcm_steps or steps, func)  # progress counts the LCM steps

    # -- the k-diffusion function the host calls ---------------------------------------------------------------
    def sample_lcm_exact(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        """``sample_lcm`` with this generation's settings and the WebUI's seeded per-step noise."""
        p = self.p
        params = generation_params(p)
        chosen = chosen_recipe(p)
        options = {"gamma": params.gamma, "original_inference_steps": params.original_inference_steps}
        start_scale = 1.0
        if chosen.recipe is not None:
            plan = self._plan or self._recipe_plan(p, chosen, len(sigmas) - 1, None)  # another schedule type
            options, start_scale = dict(plan.options), plan.start_scale
            p.extra_generation_params[INFOTEXT_RECIPE] = chosen.recipe.name
            if params.gamma_override:
                p.extra_generation_params[INFOTEXT_GAMMA_OVERRIDE] = True
        if self._mode == "txt2img" and sigmas[0] > 0:
            if not getattr(shared.opts, "sgm_noise_multiplier", False):
                x = x * (
                    (1 + sigmas[0] ** 2).sqrt() / sigmas[0]
                )  # pure noise at the first timestep (module doc)
            x = x * start_scale  # the recipe's own start (sigma_max * noise for Euler recipes)
        p.extra_generation_params.update(params.infotext())
        p.extra_generation_params[INFOTEXT_GAMMA] = options["gamma"]
        rng = getattr(p, "rng", None)

        def noise_sampler(sigma, sigma_next):
            return rng.next().to(x)

        return sample_lcm(
            model,
            x,
            sigmas,
            extra_args=extra_args,
            callback=callback,
            disable=disable,
            noise_sampler=noise_sampler if rng is not None else None,
            alphas_cumprod=self._alphas_cumprod(),
            **options,
        )

    # -- helpers -----------------------------------------------------------------------------------------------
    def _recipe_plan(self, p, chosen: ChosenRecipe, steps: int, strength: float | None):
        """The recipe's plan for this pass; its warnings (steps, CFG) once per generation, in the UI too."""
        try:
            plan = sampling_plan(
                chosen.recipe, steps, self._alphas_cumprod(), denoise=strength or 1.0,
                cfg=getattr(p, "cfg_scale", None), gamma=chosen.gamma,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(f"LCM Exact ({chosen.recipe.name}): {err}") from None
        shown = getattr(p, "lcm_plugin_warned", set())
        for line in plan.warnings:
            if line not in shown:
                logger.warning("LCM Exact: %s", line)
                _comment(p, f"LCM Exact: {line}")
                shown.add(line)
        p.lcm_plugin_warned = shown
        return plan

    def _alphas_cumprod(self) -> torch.Tensor:
        return alphas_cumprod_from_sigmas(self.model_wrap.sigmas)

    def _check_model(self) -> None:
        model = shared.sd_model
        info = getattr(model, "sd_checkpoint_info", None)
        path = getattr(info, "filename", None)
        name = f"checkpoint {getattr(info, 'name', None) or path}" if path else "the loaded model"
        check_prediction_type(
            host_prediction_type(self.model_wrap, model), checkpoint_prediction_type(path), name
        )
