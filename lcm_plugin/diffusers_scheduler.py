"""``LCMPluginScheduler``: a drop-in diffusers scheduler for LCM checkpoints and LCM-LoRA.

Use it like any diffusers scheduler::

    pipe.scheduler = LCMPluginScheduler.from_config(pipe.scheduler.config)
    image = pipe(prompt, num_inference_steps=4, guidance_scale=1.5).images[0]

With gamma = 1 (the default) it is numerically equal to ``diffusers.LCMScheduler``. Differences, all on
purpose:

- ``gamma`` (TCD's stochasticity, Zheng et al. 2024) is a config key, not a ``step`` argument, so the stock
  SD/SDXL pipelines, which pass ``eta=0.0`` to any scheduler whose ``step`` accepts ``eta``, cannot reset it.
- ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one`` are not config keys: the LCM timesteps
  are fixed by the distillation grid (``original_inference_steps``), and the last LCM step never looks
  at a timestep below 0. ``from_config`` drops them from SD configs (diffusers logs which).
- :meth:`img2img_timesteps` gives strength-aware, on-grid img2img timesteps for the unmodified
  ``StableDiffusionImg2ImgPipeline`` (diffusers issue 7651).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lcm_plugin import core

INITIAL_NOISE = ("pure", "sigma_max")


@dataclass
class LCMPluginSchedulerOutput(BaseOutput):
    """Output of :meth:`LCMPluginScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`): the latent for the next timestep (the final image latent after the last step).
        denoised (`torch.Tensor`): the consistency estimate f(x_t, t) of the clean latent at this step.
    """

    prev_sample: torch.Tensor
    denoised: torch.Tensor | None = None


class LCMPluginScheduler(SchedulerMixin, ConfigMixin):
    """Multistep Latent Consistency Model sampling (Luo et al. 2023, Algorithm 3) with TCD's gamma.

    Args:
        num_train_timesteps (`int`, defaults to 1000): number of diffusion steps the model was trained with (T).
        beta_start (`float`, defaults to 0.00085): first beta of the schedule.
        beta_end (`float`, defaults to 0.012): last beta of the schedule.
        beta_schedule (`str`, defaults to `"scaled_linear"`): one of `linear`, `scaled_linear`, `squaredcos_cap_v2`.
        trained_betas (`list[float]`, *optional*): explicit betas, overriding the three settings above.
        original_inference_steps (`int`, defaults to 50): N, the size of the distillation grid t_i = i*T//N - 1.
        clip_sample (`bool`, defaults to False): clamp x0 to [-clip_sample_range, clip_sample_range].
        clip_sample_range (`float`, defaults to 1.0): range for `clip_sample`.
        prediction_type (`str`, defaults to `"epsilon"`): `epsilon`, `v_prediction` or `sample`.
        thresholding (`bool`, defaults to False): dynamic thresholding of x0 (pixel-space models only).
        dynamic_thresholding_ratio (`float`, defaults to 0.995): quantile for dynamic thresholding.
        sample_max_value (`float`, defaults to 1.0): upper bound of the dynamic threshold.
        timestep_scaling (`float`, defaults to 10.0): t is multiplied by this in the boundary condition.
        sigma_data (`float`, defaults to 0.5): sigma_data of the boundary condition c_skip/c_out.
        rescale_betas_zero_snr (`bool`, defaults to False): rescale betas to zero terminal SNR.
        gamma (`float`, defaults to 1.0): re-noise strength in [0, 1]; 1 is LCM, 0 is deterministic, TCD
            recommends 0.3.
        consistency (`str`, defaults to `"lcm"`): the update. `lcm` is `diffusers.LCMScheduler`'s (boundary
            condition, the last step returns x0; with gamma = 0 and no boundary condition it is the DDIM/Euler
            ODE step to x0). `tcd` is `diffusers.TCDScheduler`'s strategic stochastic sampling with eta = gamma
            (no boundary condition, s = floor((1 - gamma) * t_next), the last step returns the sample at
            timestep 0; with gamma = 0 it is `DDIMScheduler`'s eta = 0 step with `set_alpha_to_one=False`).
        boundary_condition (`bool`, defaults to True): apply LCM's c_skip/c_out (only with `consistency="lcm"`);
            False for models that are not consistency models (SDXL-Lightning's Euler recipe).
        initial_noise (`str`, defaults to `"pure"`): text-to-image start. `pure`: the latent is the noise itself
            (LCM, TCD, DDIM pipelines). `sigma_max`: k-diffusion's x_T = sigma_T * noise, i.e. the latent is
            sqrt(1 - abar_T) * noise, as `EulerDiscreteScheduler` with trailing spacing starts (SDXL-Lightning).
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: list[float] | None = None,
        original_inference_steps: int = 50,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        timestep_scaling: float = 10.0,
        sigma_data: float = 0.5,
        rescale_betas_zero_snr: bool = False,
        gamma: float = 1.0,
        consistency: str = "lcm",
        boundary_condition: bool = True,
        initial_noise: str = "pure",
    ):
        core.check_prediction_type(prediction_type)
        core.check_gamma(gamma)
        core.check_consistency(consistency)
        if initial_noise not in INITIAL_NOISE:
            raise ValueError(
                f"initial_noise {initial_noise!r} is not supported; use 'pure' (LCM/TCD/DDIM) or 'sigma_max' "
                "(x_T = sigma_T * noise, diffusers' Euler schedulers)."
            )
        core.training_grid(original_inference_steps, num_train_timesteps)  # validates N against T
        self.betas = core.make_betas(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = core.alphas_cumprod_from_betas(self.betas)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)
        self._step_index: int | None = None
        self._begin_index: int | None = None

    @property
    def init_noise_sigma(self) -> float:
        """The factor pipelines multiply the starting noise by (1, or sqrt(1 - abar_T) for ``sigma_max``)."""
        if self.config.initial_noise == "pure":
            return 1.0
        return float((1 - self.alphas_cumprod[int(self.timesteps[0])]).sqrt())

    # -- step bookkeeping (the contract diffusers pipelines rely on) ---------------------------------
    @property
    def step_index(self) -> int | None:
        """Index into :attr:`timesteps` of the next call to :meth:`step`; None before the first step."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First step index, set by img2img pipelines through :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start stepping at ``timesteps[begin_index]`` (pipelines call this after slicing for strength)."""
        self._begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """LCM needs no input scaling; returns ``sample`` unchanged."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def _index_for_timestep(self, timestep: int | torch.Tensor) -> int:
        matches = (self.timesteps == torch.as_tensor(timestep, device=self.timesteps.device)).nonzero()
        if len(matches) == 0:
            raise ValueError(
                f"timestep {int(timestep)} is not in this scheduler's timesteps {self.timesteps.tolist()}."
            )
        return int(matches[1 if len(matches) > 1 else 0])

    # -- timesteps ---------------------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        original_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float = 1.0,
    ) -> None:
        """Choose the inference timesteps on the LCM skipping-step grid.

        Args:
            num_inference_steps (`int`, *optional*): number of LCM steps (1..original_inference_steps).
            device (`str` or `torch.device`, *optional*): where to put :attr:`timesteps`.
            original_inference_steps (`int`, *optional*): override the config's N for this call.
            timesteps (`list[int]`, *optional*): explicit descending timesteps instead of `num_inference_steps`.
            strength (`float`, defaults to 1.0): img2img strength in (0, 1]; restricts the grid to t < strength*T.
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps to set_timesteps.")
        n_orig = original_inference_steps or self.config.original_inference_steps
        n_train = self.config.num_train_timesteps
        if timesteps is not None:
            chosen = core.validate_custom_timesteps(timesteps, n_orig, n_train, strength)
        else:
            chosen = core.lcm_timesteps(num_inference_steps, n_orig, n_train, strength)
        self.num_inference_steps = len(chosen)
        self.timesteps = torch.from_numpy(chosen).to(device=device, dtype=torch.long)
        self._step_index = None
        self._begin_index = None

    def img2img_timesteps(
        self, num_inference_steps: int, strength: float, original_inference_steps: int | None = None
    ) -> list[int]:
        """On-grid img2img timesteps for pipelines that do not pass ``strength`` to the scheduler.

        ``StableDiffusionImg2ImgPipeline`` runs int(steps * strength) of the text-to-image timesteps, which are
        off the strength-restricted LCM grid. Pass these instead, with the pipeline's own strength at 1.0::

            ts = pipe.scheduler.img2img_timesteps(4, strength=0.5)     # [499, 379, 259, 139]
            pipe(prompt, image=init_image, timesteps=ts, strength=1.0)

        The pipeline then noises the image to ``ts[0]`` and runs every requested step on the grid.
        """
        n_orig = original_inference_steps or self.config.original_inference_steps
        return core.lcm_timesteps(
            num_inference_steps, n_orig, self.config.num_train_timesteps, strength
        ).tolist()

    # -- the update --------------------------------------------------------------------------------
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> LCMPluginSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One multistep LCM update: x0 from the model output, the boundary condition, then re-noise.

        Args:
            model_output (`torch.Tensor`): the UNet output at ``timestep`` (per ``prediction_type``).
            timestep (`int` or `torch.Tensor`): the current timestep (an entry of :attr:`timesteps`).
            sample (`torch.Tensor`): the current latent x_t.
            generator (`torch.Generator`, *optional*): source of the fresh noise.
            return_dict (`bool`, defaults to True): return a dataclass instead of a tuple.
        """
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step.")
        if self._step_index is None:
            self._step_index = (
                self._begin_index if self._begin_index is not None else self._index_for_timestep(timestep)
            )
        cfg = self.config
        alpha_prod_t = self.alphas_cumprod[timestep]

        # 1. x0 from the model output (paper eq. 9 parameterisations), optionally clipped/thresholded.
        x0 = core.predicted_original_sample(model_output, sample, alpha_prod_t, cfg.prediction_type)
        if cfg.thresholding:
            x0 = core.dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
        elif cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

        next_index = self._step_index + 1
        if cfg.consistency == "tcd":
            prev_sample, denoised = self._tcd_update(
                x0, sample, alpha_prod_t, next_index, model_output, generator
            )
        else:
            prev_sample, denoised = self._lcm_update(
                x0, sample, alpha_prod_t, timestep, next_index, model_output, generator
            )
        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return LCMPluginSchedulerOutput(prev_sample=prev_sample, denoised=denoised)

    def _noise(
        self, model_output: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype
    ) -> torch.Tensor:
        return randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=dtype)

    def _lcm_update(self, x0, sample, alpha_prod_t, timestep, next_index, model_output, generator):
        """LCM (paper Algorithm 3): boundary condition, then re-noise to the next timestep (gamma: TCD-style)."""
        cfg = self.config
        # 2. Boundary condition: f(x, t) = c_skip x + c_out x0 (paper eq. 5).
        denoised = x0
        if cfg.boundary_condition:
            denoised = core.consistency_output(
                sample, x0, timestep, sigma_data=cfg.sigma_data, timestep_scaling=cfg.timestep_scaling
            )
        # 3. Re-noise to the next grid timestep, unless this was the last step.
        if next_index >= len(self.timesteps):
            return denoised, denoised
        next_timestep = int(self.timesteps[next_index])
        noise = self._noise(model_output, generator, denoised.dtype) if cfg.gamma > 0 else None
        s = core.intermediate_timestep(next_timestep, cfg.gamma)
        prev_sample = core.renoise(
            denoised,
            noise,
            self.alphas_cumprod[next_timestep],
            sample=sample,
            alpha_prod_t=alpha_prod_t,
            alpha_prod_s=None if s < 0 else self.alphas_cumprod[s],
        )
        return prev_sample, denoised

    def _tcd_update(self, x0, sample, alpha_prod_t, next_index, model_output, generator):
        """TCD (Zheng et al. 2024, Algorithm 4): DDIM to s = floor((1 - gamma) t_next), then noise up to t_next.

        As ``diffusers.TCDScheduler``: no boundary condition, and the last step (t_next = 0) returns the sample
        at timestep 0. Noise is drawn on every step but the last when gamma > 0.
        """
        cfg = self.config
        last = next_index >= len(self.timesteps)
        next_timestep = 0 if last else int(self.timesteps[next_index])
        alpha_prod_s = self.alphas_cumprod[core.tcd_intermediate_timestep(next_timestep, cfg.gamma)]
        if last or cfg.gamma == 0:
            noise, alpha_prod_next = None, alpha_prod_s
        else:
            noise, alpha_prod_next = (
                self._noise(model_output, generator, x0.dtype),
                self.alphas_cumprod[next_timestep],
            )
        eps = core.predicted_epsilon(model_output, sample, alpha_prod_t, cfg.prediction_type)
        prev_sample = core.renoise(x0, noise, alpha_prod_next, alpha_prod_s=alpha_prod_s, noise_estimate=eps)
        return prev_sample, x0

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward diffusion q(x_t | x_0) = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per-sample timesteps."""
        abar = core.alpha_prod_at(self.alphas_cumprod, timesteps, original_samples)
        return core.add_noise(original_samples, noise, abar)
