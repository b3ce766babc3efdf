"""The evaluation harness: FD, KID and prompt adherence vs number of steps, for any list of samplers.

A :class:`Sampler` is (name, scheduler factory, guidance, steps, optional LoRA). The same function evaluates
the teacher under DDIM/DPM-Solver++/Euler and an LCM-LoRA under the LCM scheduler, with the same prompts,
the same initial noise (one seeded generator per sample) and the same real reference set, so rows compare.
Metrics: FD in the judge's features (torchmetrics), KID in the same features on prompt-disjoint subsets
(:func:`lcm_plugin.toy.judge.kid`; same-prompt pairs bias torchmetrics' KID negative), adherence from its heads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lcm_plugin.toy import world
from lcm_plugin.toy.judge import Judge, JudgeFeatures, adherence, kid
from lcm_plugin.toy.judge_train import real_images

logger = logging.getLogger(__name__)

STANDARD_STEPS = (1, 2, 4, 8, 25, 50)
BASELINE_NAME = "real vs real (re-render)"
VAE_ROUNDTRIP_NAME = "VAE round trip (ceiling)"


@dataclass(frozen=True)
class Sampler:
    """One row group of the table.

    Args:
        name: label in the table, e.g. "DDIM" or "LCM-LoRA".
        scheduler_factory: builds the scheduler from the pipeline's scheduler config (a dict-like
            FrozenDict), e.g. ``lambda c: DDIMScheduler.from_config(c)``.
        guidance_scale: classifier-free guidance scale (diffusers convention; 1.0 = no unconditional pass).
        steps: numbers of inference steps to evaluate.
        lora: path of LoRA weights (a folder or .safetensors file ``load_lora_weights`` accepts), or None.
        lora_scale: LoRA strength.
        timesteps: explicit descending inference timesteps (then ``steps`` must be ``(len(timesteps),)``);
            None lets the scheduler choose them from the step count.
    """

    name: str
    scheduler_factory: Callable[[Any], Any]
    guidance_scale: float
    steps: tuple[int, ...] = STANDARD_STEPS
    lora: str | None = None
    lora_scale: float = 1.0
    timesteps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.steps or any(int(s) < 1 for s in self.steps):
            raise ValueError(
                f"steps of sampler {self.name!r} must be a non-empty list of integers >= 1, got {self.steps}"
            )
        if self.timesteps is not None and tuple(self.steps) != (len(self.timesteps),):
            raise ValueError(
                f"sampler {self.name!r} has explicit timesteps {list(self.timesteps)}, so its steps must be "
                f"({len(self.timesteps)},), got {self.steps}"
            )
        if self.guidance_scale < 0:
            raise ValueError(
                f"guidance_scale of sampler {self.name!r} must be >= 0, got {self.guidance_scale}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Sample counts and seeds. ``n_samples`` prompts come from the ``test`` split (indices 0..n-1); the real
    reference set is the same test images, and the real-vs-real baseline compares them with a second,
    independent rendering of the same scenes (so prompt matching does not favour the generated rows)."""

    n_samples: int = 128
    batch: int = 128
    seed: int = 0
    kid_subset: int = (
        50  # images per KID subset, capped at n_samples // 2 (real and generated halves: other prompts)
    )
    split: str = "test"  # "val" for choosing settings/checkpoints, so the test rows stay unbiased

    def __post_init__(self) -> None:
        if self.split not in ("test", "val"):
            raise ValueError(
                f"split must be 'test' (the reported tables) or 'val' (model selection), got {self.split!r}"
            )
        if self.n_samples < 4:
            raise ValueError(
                f"n_samples must be >= 4 (FD needs a covariance, KID two prompt-disjoint halves), got {self.n_samples}"
            )
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.kid_subset < 2:
            raise ValueError(f"kid_subset must be >= 2, got {self.kid_subset}")


@dataclass
class EvalRow:
    """Measured metrics of one (sampler, steps) setting."""

    sampler: str
    steps: int
    guidance_scale: float
    fd: float
    kid: float
    kid_std: float
    adherence: dict[str, float]
    seconds: float
    unet_evals: int
    samples: torch.Tensor | None = field(default=None, repr=False)


def standard_samplers(guidance_scale: float = 4.0, steps: Sequence[int] = STANDARD_STEPS) -> list[Sampler]:
    """The teacher rows: DDIM, DPM-Solver++ (2M) and Euler, all with classifier-free guidance."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    st = tuple(int(s) for s in steps)
    return [
        Sampler("DDIM", lambda c: DDIMScheduler.from_config(c), guidance_scale, st),
        Sampler(
            "DPM-Solver++",
            lambda c: DPMSolverMultistepScheduler.from_config(c, algorithm_type="dpmsolver++"),
            guidance_scale,
            st,
        ),
        Sampler("Euler", lambda c: EulerDiscreteScheduler.from_config(c), guidance_scale, st),
    ]


def lcm_scheduler_factory(
    original_inference_steps: int | None = None, gamma: float = 1.0
) -> Callable[[Any], Any]:
    """``LCMPluginScheduler.from_config`` (on the distillation grid of size ``original_inference_steps`` when
    given, else the config's / 50; ``gamma`` < 1 is TCD's partial re-noising, 1 is plain LCM)."""
    from lcm_plugin import core
    from lcm_plugin.diffusers_scheduler import LCMPluginScheduler

    core.check_gamma(gamma)
    extra: dict[str, Any] = {"gamma": float(gamma)}
    if original_inference_steps is not None:
        extra["original_inference_steps"] = int(original_inference_steps)
    return lambda c: LCMPluginScheduler.from_config(c, **extra)


def lcm_sampler(
    lora: str | None,
    steps: Sequence[int] = (1, 2, 4, 8),
    guidance_scale: float = 1.0,
    name: str = "LCM-LoRA",
    original_inference_steps: int | None = None,
    gamma: float = 1.0,
    timesteps: Sequence[int] | None = None,
) -> Sampler:
    """An LCM row: the LCM scheduler with an LCM-LoRA (or a full LCM checkpoint when ``lora`` is None).

    The grid N (``original_inference_steps``) defaults to the one the adapter was distilled on (its metadata), else 50. ``gamma`` < 1
    samples with TCD's partial re-noising between steps (the row is then named "<name> (gamma G)").
    ``timesteps`` replaces the scheduler's choice for a step count with an explicit descending list (one row
    of len(timesteps) steps, named "<name> [t1,t2,...]"); ``steps`` is then ignored.
    """
    if original_inference_steps is None and lora is not None:
        from lcm_plugin.adapters.inspection import read_original_inference_steps

        original_inference_steps = read_original_inference_steps(lora)
    factory = lcm_scheduler_factory(original_inference_steps, gamma)
    if gamma != 1.0:
        name = f"{name} (gamma {gamma:g})"
    if timesteps is not None:
        chosen = tuple(int(t) for t in timesteps)
        if original_inference_steps is not None:  # fail before any sampling; else the scheduler checks them
            from lcm_plugin import core

            core.validate_custom_timesteps(chosen, original_inference_steps)
        name = f"{name} [{','.join(map(str, chosen))}]"
        return Sampler(name, factory, guidance_scale, (len(chosen),), lora=lora, timesteps=chosen)
    return Sampler(name, factory, guidance_scale, tuple(int(s) for s in steps), lora=lora)


class _Metrics:
    """FD (torchmetrics) and KID (:func:`lcm_plugin.toy.judge.kid`, prompt-disjoint subsets) against a fixed real
    set, whose features are computed once. Generated images must come in the real set's prompt order."""

    def __init__(self, judge: Judge, real: torch.Tensor, kid_subset: int, seed: int = 0) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.features = JudgeFeatures(judge)
        self.fid = FrechetInceptionDistance(feature=self.features, reset_real_features=False, normalize=True)
        self.fid.update(real, real=True)
        with torch.no_grad():
            self.real_features = self.features(real)
        self.kid_subset, self.seed = kid_subset, seed

    @torch.no_grad()
    def __call__(self, fake: torch.Tensor) -> tuple[float, float, float]:
        self.fid.reset()
        self.fid.update(fake, real=False)
        kid_mean, kid_std = kid(self.real_features, self.features(fake), self.kid_subset, seed=self.seed)
        return float(self.fid.compute()), kid_mean, kid_std


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    steps: int,
    guidance_scale: float,
    seed: int,
    batch: int,
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for ``prompts``; sample i always starts from generator seed ``seed + i``.
    With ``timesteps`` the pipeline samples at exactly those timesteps (``steps`` must equal their count)."""
    if timesteps is not None and len(timesteps) != steps:
        raise ValueError(f"{len(timesteps)} timesteps given for {steps} steps")
    schedule = {"timesteps": list(timesteps)} if timesteps is not None else {"num_inference_steps": steps}
    out = []
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i : i + batch])
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        res = pipe(
            prompt=chunk,
            **schedule,
            guidance_scale=guidance_scale,
            generator=gens,
            output_type="pt",
        )
        out.append(res.images.float().cpu().clamp(0, 1))
    return torch.cat(out)


def second_render(
    split: str, count: int, config: world.WorldConfig | None = None
) -> tuple[torch.Tensor, list[world.Scene]]:
    """The scenes of ``split`` 0..count-1 drawn again with independent randomness (position/size/colour jitter,
    texture): real images for the *same* prompts, as a generator matching the prompts perfectly would give."""
    import hashlib

    import numpy as np

    config = config or world.WorldConfig()
    images, scenes = [], []
    for i in range(count):
        scene, _ = world.sample_scene(config, split, i)
        seed = int.from_bytes(
            hashlib.sha256(f"second-render/{config.seed}/{split}/{i}".encode()).digest()[:8], "little"
        )
        images.append(
            torch.from_numpy(world.render(scene, np.random.default_rng(seed), config)).permute(2, 0, 1)
        )
        scenes.append(scene)
    # Same quantisation as the reference images (uint8 PNG-like).
    return (torch.stack(images) * 255).round() / 255, scenes


def real_baseline(judge: Judge, cfg: EvalConfig) -> EvalRow:
    """Real-vs-real reference: independent second renders of the same test scenes against the test images."""
    real, _, _ = real_images(cfg.split, cfg.n_samples)
    other, other_scenes = second_render(cfg.split, cfg.n_samples)
    fd, kid, kid_std = _Metrics(judge, real, cfg.kid_subset)(other)
    return EvalRow(BASELINE_NAME, 0, 0.0, fd, kid, kid_std, adherence(judge, other, other_scenes), 0.0, 0)


@torch.no_grad()
def vae_roundtrip(pipe, real: torch.Tensor, batch: int) -> torch.Tensor:
    """``real`` images (N, 3, H, W) in [0, 1] encoded by the pipeline's VAE (posterior mode) and decoded again:
    what a perfect UNet would produce, so its adherence is the ceiling every sampler of this VAE stays under."""
    vae = pipe.vae
    out = []
    for i in range(0, len(real), batch):
        x = real[i : i + batch].to(vae.device, vae.dtype) * 2 - 1
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        out.append(((rec.float().cpu() + 1) / 2).clamp(0, 1))
    return torch.cat(out)


def unet_evals_per_step(pipe, guidance_scale: float) -> int:
    """UNet evaluations per sampling step: 2 with classifier-free guidance, 1 without it or when the UNet embeds
    the guidance scale (a full LCM with ``time_cond_proj_dim``: diffusers then skips the unconditional pass)."""
    embeds_guidance = getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None
    return 2 if guidance_scale > 1.0 and not embeds_guidance else 1


def evaluate_samplers(
    pipe,
    samplers: Sequence[Sampler],
    judge: Judge,
    cfg: EvalConfig | None = None,
    keep_samples: int = 0,
    vae_ceiling: bool = False,
) -> list[EvalRow]:
    """Evaluate every (sampler, steps) on the toy test prompts; the first row is the real-vs-real baseline
    (followed, with ``vae_ceiling``, by the real test images through the VAE: the ceiling of every sampler).

    ``pipe`` is a loaded StableDiffusionPipeline (toy teacher or a real checkpoint generating 32x32 images);
    its scheduler and LoRA state are restored afterwards. ``keep_samples`` first images of each row are kept
    in ``EvalRow.samples`` for image grids.
    """
    from lcm_plugin.pipeline_loading import load_lora

    cfg = cfg or EvalConfig()
    real, scenes, prompts = real_images(cfg.split, cfg.n_samples)
    metrics = _Metrics(judge, real, cfg.kid_subset)
    rows = [real_baseline(judge, cfg)]
    logger.info("real-vs-real baseline: FD %.3f KID %.5f", rows[0].fd, rows[0].kid)
    if vae_ceiling:
        rec = vae_roundtrip(pipe, real, cfg.batch)
        fd, kid, kid_std = metrics(rec)
        rows.append(
            EvalRow(VAE_ROUNDTRIP_NAME, 0, 0.0, fd, kid, kid_std, adherence(judge, rec, scenes), 0.0, 0)
        )
        logger.info("VAE round trip: FD %.3f adherence %.3f", fd, rows[-1].adherence["all"])
    original = pipe.scheduler
    try:
        for sampler in samplers:
            if sampler.lora:
                load_lora(pipe, sampler.lora, adapter_name="eval_lora")
                pipe.set_adapters(["eval_lora"], adapter_weights=[sampler.lora_scale])
            try:
                pipe.scheduler = sampler.scheduler_factory(original.config)
                for steps in sampler.steps:
                    t0 = time.perf_counter()
                    images = generate(
                        pipe, prompts, steps, sampler.guidance_scale, cfg.seed, cfg.batch, sampler.timesteps
                    )
                    seconds = time.perf_counter() - t0
                    fd, kid, kid_std = metrics(images)
                    evals = steps * unet_evals_per_step(pipe, sampler.guidance_scale)
                    row = EvalRow(
                        sampler.name,
                        steps,
                        sampler.guidance_scale,
                        fd,
                        kid,
                        kid_std,
                        adherence(judge, images, scenes),
                        seconds,
                        evals,
                    )
                    row.samples = images[:keep_samples].clone() if keep_samples else None
                    rows.append(row)
                    logger.info(
                        "%s %d steps: FD %.3f KID %.5f adherence %.3f (%.1f s)",
                        sampler.name,
                        steps,
                        fd,
                        kid,
                        row.adherence["all"],
                        seconds,
                    )
            finally:
                if sampler.lora:
                    pipe.unload_lora_weights()
    finally:
        pipe.scheduler = original
    return rows


def scenes_for(split: str, count: int) -> list[world.Scene]:
    """Ground-truth scenes of the first ``count`` samples of ``split`` (the prompts' attributes)."""
    return [world.sample_scene(world.WorldConfig(), split, i)[0] for i in range(count)]
