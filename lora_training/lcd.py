"""One latent consistency distillation (LCD) / fine-tuning (LCF) step (LCM paper Algorithm 1, section 4.4).

The step is written against three plain callables, so the same code serves LCM-LoRA (student = UNet with
adapters, teacher = the same UNet with adapters disabled), full-model LCD (student with a w-embedding, separate
frozen teacher) and LCF (no teacher):

- ``student(sample, t, cond, timestep_cond) -> model output`` (with grad),
- ``teacher(sample, t, cond) -> model output`` (no grad; cond and uncond come batched in ONE call),
- ``target(sample, t, cond, timestep_cond) -> model output`` (no grad: the student itself or its EMA).

All LCM math comes from :mod:`lcm_plugin.core`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcm_plugin.core import (
    add_noise,
    alpha_prod_at,
    batch_view,
    consistency_output,
    guidance_scale_embedding,
    guided,
    predicted_noise,
    predicted_original_sample,
    training_grid,
)
from lcm_plugin.core.solvers import check_solver, ddim_step, dpmpp_2m_step, euler_step
from lora_training.losses import consistency_loss

ModelFn = Callable[..., torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Objective:
    """The fixed settings of the consistency objective (a view of TrainConfig plus the teacher's schedule)."""

    alphas_cumprod: torch.Tensor
    prediction_type: str
    original_inference_steps: int = 50  # N, the distillation grid
    num_train_timesteps: int = 1000
    solver: str = "ddim"
    w_min: float = 5.0
    w_max: float = 15.0
    omega: float | None = None
    w_embedding_dim: int | None = None  # set for students with a w-embedding (full LCD, LCF of an LCM)
    with_teacher: bool = True  # False: LCF (consistency training on the data)
    loss_type: str = "huber"
    huber_c: float = 0.001
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0

    def __post_init__(self) -> None:
        check_solver(self.solver)
        if self.solver == "dpmpp_2m" and self.skipping_interval < 2:
            raise ValueError("solver 'dpmpp_2m' takes two sub-steps inside the skip interval: use k >= 2 "
                             "(original_inference_steps <= num_train_timesteps / 2).")  # fmt: skip

    @property
    def skipping_interval(self) -> int:
        """k = T // N, the skipping interval of LCM's skipping-step technique (paper section 4.3): the teacher
        solves from t_{n+k} to t_n, k training timesteps apart (20 for N = 50)."""
        return self.num_train_timesteps // self.original_inference_steps

    @property
    def grid(self) -> torch.Tensor:
        return torch.from_numpy(training_grid(self.original_inference_steps, self.num_train_timesteps))


@dataclass
class Draws:
    """The random choices of one step (drawn from the trainer's generator, in a fixed order)."""

    t_start: torch.Tensor  # t_{n+k}, shape (B,)
    t_end: torch.Tensor  # t_n = max(t_{n+k} - k, 0)
    noise: torch.Tensor  # eps
    w: torch.Tensor  # guidance in the LCM formulation, shape (B,)


def draw(obj: Objective, latents: torch.Tensor, generator: torch.Generator) -> Draws:
    """Sample n ~ U{0..N-1}, eps ~ N(0, I) and w ~ U[w_min, w_max] (or the fixed omega) on the CPU generator."""
    bsz = latents.shape[0]
    index = torch.randint(0, obj.original_inference_steps, (bsz,), generator=generator)
    t_start = obj.grid[index]
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    u = torch.rand(bsz, generator=generator)
    w = (
        torch.full((bsz,), float(obj.omega))
        if obj.omega is not None
        else obj.w_min + (obj.w_max - obj.w_min) * u
    )
    dev = latents.device
    return Draws(
        t_start.to(dev),
        (t_start - obj.skipping_interval).clamp(min=0).to(dev),
        noise.to(dev, latents.dtype),
        w.to(dev),
    )


def _abar(obj: Objective, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The teacher's abar at per-sample timesteps ``t``, shaped, placed and typed like ``like``."""
    return alpha_prod_at(obj.alphas_cumprod, t, like)


def _cat_cond(cond: dict, uncond: dict) -> dict:
    return {k: torch.cat([cond[k], uncond[k]]) for k in cond}


def guided_estimates(obj: Objective, teacher: ModelFn, sample: torch.Tensor, t: torch.Tensor, cond: dict,
                     uncond: dict, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """CFG-augmented (x0_w, eps_w) of the teacher at (sample, t): cond and uncond in one batched forward.

    The teacher output is converted with its own parameterisation (epsilon or v) before guidance, so
    v-prediction teachers are handled correctly (paper eq. 8-9, LCM formulation of w).
    """
    out = teacher(torch.cat([sample, sample]), torch.cat([t, t]), _cat_cond(cond, uncond)).to(sample.dtype)
    abar = _abar(obj, torch.cat([t, t]), out)
    x0 = predicted_original_sample(out, torch.cat([sample, sample]), abar, obj.prediction_type)
    eps = predicted_noise(torch.cat([sample, sample]), x0, abar)
    x0_c, x0_u = x0.chunk(2)
    eps_c, eps_u = eps.chunk(2)
    return guided(x0_c, x0_u, w), guided(eps_c, eps_u, w)


@torch.no_grad()
def teacher_solve(
    obj: Objective, teacher: ModelFn, sample: torch.Tensor, d: Draws, cond: dict, uncond: dict
) -> torch.Tensor:
    """z_n: one step of the teacher's guided PF-ODE from t_{n+k} to t_n with the configured solver."""
    x0_w, eps_w = guided_estimates(obj, teacher, sample, d.t_start, cond, uncond, d.w)
    if obj.solver == "ddim":
        return ddim_step(x0_w, eps_w, _abar(obj, d.t_end, sample))
    if obj.solver == "euler":
        return euler_step(sample, eps_w, d.t_start, d.t_end, obj.alphas_cumprod)
    # DPM-Solver++(2M): a first-order step to the interval midpoint, then the second-order multistep update.
    t_mid = (d.t_start + d.t_end) // 2
    a_start, a_mid, a_end = (
        _abar(obj, d.t_start, sample),
        _abar(obj, t_mid, sample),
        _abar(obj, d.t_end, sample),
    )
    x_mid = dpmpp_2m_step(sample, x0_w, a_start, a_mid)
    x0_mid, _ = guided_estimates(obj, teacher, x_mid, t_mid, cond, uncond, d.w)
    return dpmpp_2m_step(x_mid, x0_mid, a_mid, a_end, denoised_prev=x0_w, alpha_prod_prev=a_start)


def consistency_fn(obj: Objective, model: ModelFn, sample: torch.Tensor, t: torch.Tensor, cond: dict,
                   w_embedding: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """f(z, t) = c_skip z + c_out x0(model(z, t)) with the model's own parameterisation."""
    out = model(sample, t, cond, w_embedding).to(sample.dtype)
    x0 = predicted_original_sample(out, sample, _abar(obj, t, sample), obj.prediction_type)
    timestep = batch_view(t, sample).to(sample.dtype)  # per-sample c_skip / c_out
    return consistency_output(
        sample, x0, timestep, sigma_data=obj.sigma_data, timestep_scaling=obj.timestep_scaling
    )


def lcm_loss(obj: Objective, *, student: ModelFn, teacher: ModelFn | None, target: ModelFn, latents: torch.Tensor,
             cond: dict, uncond: dict | None, generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """The consistency loss of one batch of clean latents x0 (LCM Algorithm 1 for LCD; section 4.4 for LCF)."""
    d = draw(obj, latents, generator)
    abar_start = _abar(obj, d.t_start, latents)
    noisy = add_noise(latents, d.noise, abar_start)  # forward diffusion q(z_{n+k} | x0)
    w_emb = None
    if obj.w_embedding_dim is not None:
        w_emb = guidance_scale_embedding(d.w, obj.w_embedding_dim).to(latents.device, latents.dtype)
    # Order: teacher (or the data itself, LCF), then the no-grad target, then the student. Disabling LoRA adapters
    # toggles requires_grad, which must not happen between the student's forward and backward, and running the
    # target before the student keeps its transient activations off the peak (the student's stored graph).
    if obj.with_teacher:
        if teacher is None or uncond is None:
            raise ValueError(
                "distillation needs a teacher and the unconditional embedding; use LCF without them."
            )
        z_prev = teacher_solve(obj, teacher, noisy, d, cond, uncond)
    else:
        z_prev = add_noise(latents, d.noise, _abar(obj, d.t_end, latents))  # same x0, same eps
    with torch.no_grad():
        target_value = consistency_fn(obj, target, z_prev, d.t_end, cond, w_emb)
    prediction = consistency_fn(obj, student, noisy, d.t_start, cond, w_emb)
    return consistency_loss(prediction, target_value, loss_type=obj.loss_type, huber_c=obj.huber_c)
