"""The diffusers LCM-LoRA training step, re-implemented ONCE for the CPU and GPU training-step benchmarks
(``benchmarks/train_step.py``, ``benchmarks/gpu_train_step.py``), with the switches that turn it into ours one
choice at a time.

What ``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py`` (and ``..._sdxl_wds.py``) does per
step, and this module with ``precision="script"`` and no ablation:

1. VAE encode of the pixels (``latent_dist.sample()`` x scaling factor) and the text encoder on the captions,
   every step; the unconditional embedding of ``""`` once before the loop (SDXL: zeros).
2. Student (the LoRA UNet, base weights as loaded: float32, neither wds script casts it) forward with grad, at
   the run's precision (no autocast of its own; a ``--mixed_precision`` run wraps it in accelerate's autocast).
3. A separate frozen teacher UNet (float32 unless ``--cast_teacher_unet``), the cond pass then the uncond pass,
   under ``torch.autocast(device)``, i.e. autocast's default dtype: bfloat16 on a CPU, float16 on CUDA.
4. Target: the student under no-grad, inside the same ``torch.autocast(device)``; in a mixed-precision run the
   prepared student's own autocast (the run's dtype) is innermost and wins.

``precision="equal"`` drops the reference's own autocast contexts (teacher and target then run like ours: at
the run's precision). Ablations (cumulative in the benchmarks' rows, each one of our choices):
``cache`` (latents and embeddings from a precomputed cache: no VAE or text encoder per step), ``one_unet`` (the
teacher is the student's base with adapters disabled: no second UNet), ``batched`` (cond and uncond in ONE
teacher forward). All LCM math comes from ``lora_training.lcd`` / ``lcm_plugin.core``, as ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

PRECISIONS = ("script", "equal")

Batch = tuple[torch.Tensor, dict, dict]  # clean latents x0, cond, uncond


def autocast_contexts(
    precision: str, device_type: str, run_dtype: torch.dtype | None
) -> tuple[Callable, Callable, Callable]:
    """(student, teacher, target) context factories of the reference step; the batch (VAE, text encoders) runs
    outside all of them, as in the script.

    ``run_dtype`` is the run's mixed-precision dtype (None: a full-precision run, the scripts' default). With
    ``precision="equal"`` every pass runs under the run's autocast only, as our trainer's ``accelerator.autocast()``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")

    def run():  # accelerate's autocast (around the prepared student's forward; around our whole step)
        return (
            torch.autocast(device_type, dtype=run_dtype)
            if run_dtype is not None
            else contextlib.nullcontext()
        )

    if precision == "equal":
        return run, run, run

    def script():  # the script's `autocast_ctx = torch.autocast(accelerator.device.type)`
        return torch.autocast(device_type)

    # target: the prepared student's own autocast is innermost and wins; without mixed precision it is script()
    return run, script, (run if run_dtype is not None else script)


def script_batch(
    vae, encode_cond: Callable[[], dict], pixels: torch.Tensor, uncond: dict
) -> Callable[[torch.Generator], Batch]:
    """Step 1 of the script: VAE encode + cond text encoder every step; ``uncond`` was encoded once before."""

    def batch(gen: torch.Generator) -> Batch:
        with torch.no_grad():
            dist = vae.encode(pixels.to(vae.dtype)).latent_dist
            eps = torch.randn(dist.mean.shape, generator=gen).to(dist.mean.device, dist.mean.dtype)
            latents = (dist.mean + dist.std * eps) * vae.config.scaling_factor
            return latents.float(), encode_cond(), uncond

    return batch


def cache_batch(
    mean: torch.Tensor, std: torch.Tensor, cond: dict, uncond: dict, device
) -> Callable[[torch.Generator], Batch]:
    """What our trainer does with a cache file (``Trainer._prepare_batch``): host tensors to the device, one
    posterior sample."""

    def batch(gen: torch.Generator) -> Batch:
        c = {k: v.to(device) for k, v in cond.items()}
        u = {k: v.to(device).expand_as(c[k]) if v.shape[0] == 1 else v.to(device) for k, v in uncond.items()}
        eps = torch.randn(mean.shape, generator=gen).to(device)
        return (mean.to(device) + std.to(device) * eps).float(), c, u

    return batch


@dataclass
class ReferenceStep:
    """One LCM-LoRA loss of the reference (call ``loss(gen)``, then backward and the optimizer as usual).

    ``teacher`` None means the ``one_unet`` ablation (the student's base, adapters disabled, is the teacher).
    """

    obj: object  # lora_training.lcd.Objective
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    batch: Callable[[torch.Generator], Batch]
    student_ctx: Callable = contextlib.nullcontext
    teacher_ctx: Callable = contextlib.nullcontext
    target_ctx: Callable = contextlib.nullcontext
    batched: bool = False

    @classmethod
    def build(
        cls,
        obj,
        student,
        teacher,
        batch,
        *,
        precision: str,
        device_type: str,
        run_dtype: torch.dtype | None,
        batched: bool = False,
    ) -> ReferenceStep:
        """A step with the contexts of :func:`autocast_contexts`."""
        s, t, g = autocast_contexts(precision, device_type, run_dtype)
        return cls(obj, student, teacher, batch, s, t, g, batched)

    def _student(self, s, t, c, w):
        from lora_training.teachers import unet_call

        return unet_call(self.student, s, t, c)

    def _teacher_once(self, s, t, c):
        from lora_training.teachers import adapters_disabled, unet_call

        if self.teacher is not None:
            return unet_call(self.teacher, s, t, c)
        with adapters_disabled(self.student):
            return unet_call(self.student, s, t, c)

    def _teacher(self, s, t, c):
        if self.batched:
            return self._teacher_once(s, t, c)
        half = (
            s.shape[0] // 2
        )  # lcd.guided_estimates stacks [cond; uncond]: run them as the script's two passes
        first, second = {k: v[:half] for k, v in c.items()}, {k: v[half:] for k, v in c.items()}
        return torch.cat(
            [self._teacher_once(s[:half], t[:half], first), self._teacher_once(s[half:], t[half:], second)]
        )

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        """The script's order: student prediction at t_{n+k} (with grad), teacher solve, target at t_n."""
        from lora_training.lcd import consistency_fn, draw, teacher_solve
        from lora_training.losses import consistency_loss

        latents, cond, uncond = self.batch(gen)
        obj = self.obj
        d = draw(obj, latents, gen)
        a = obj.alphas_cumprod.to(latents.device)[d.t_start].reshape(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * d.noise
        with self.student_ctx():
            pred = consistency_fn(obj, self._student, noisy, d.t_start, cond, None)
        # one_unet toggles the adapters here, between the student's forward and backward: the gradients are
        # unchanged by it (checked on the toy UNet: all 330 LoRA gradients bit-identical)
        with torch.no_grad(), self.teacher_ctx():
            z_prev = teacher_solve(obj, self._teacher, noisy, d, cond, uncond).float()
        with torch.no_grad(), self.target_ctx():
            target = consistency_fn(obj, self._student, z_prev, d.t_end, cond, None)
        return consistency_loss(pred.float(), target.float(), loss_type=obj.loss_type, huber_c=obj.huber_c)
