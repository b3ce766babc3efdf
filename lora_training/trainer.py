"""The LCM trainer: LCM-LoRA distillation, full-model LCD and LCF fine-tuning on accelerate.

``accelerate launch -m lcm_plugin.cli train lora ...`` runs it data-parallel (DDP); a plain ``lcm-plugin train``
runs one process. Randomness: every micro-step draws from a generator seeded by (seed, rank, micro-step), and
the data order is a function of (seed, epoch), so a resumed run replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_training import checkpoint as ckpt
from lora_training.config import TrainConfig
from lora_training.data import BatchStream, DataPosition, build_source
from lora_training.lcd import Objective, lcm_loss
from lora_training.models import TrainModels, build_models

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    steps: int
    final_loss: float
    outputs: dict[str, Path] = field(default_factory=dict)
    skipped_nan_steps: int = 0
    losses: list[float] = field(default_factory=list)


def step_generator(seed: int, rank: int, micro_step: int) -> torch.Generator:
    """The CPU generator of one micro-step: a pure function of (seed, rank, micro-step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + micro_step) % (2**63 - 1))


class Trainer:
    """Owns the accelerator, the models, the optimizer and the data stream of one training run."""

    def __init__(self, config: TrainConfig, *, accelerator=None) -> None:
        from accelerate import Accelerator

        self.cfg = config
        self.accelerator = accelerator or Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        self.out = Path(config.output_dir)
        self.models: TrainModels = build_models(config, self.accelerator)
        self.objective = Objective(
            alphas_cumprod=self.models.parts.alphas_cumprod,
            prediction_type=self.models.parts.prediction_type,
            original_inference_steps=config.original_inference_steps,
            num_train_timesteps=self.models.parts.num_train_timesteps,
            solver=config.solver, w_min=config.w_min, w_max=config.w_max, omega=config.omega,
            w_embedding_dim=self.models.w_embedding_dim, with_teacher=config.method != "lcf",
            loss_type=config.loss_type, huber_c=config.huber_c, sigma_data=config.sigma_data,
            timestep_scaling=config.timestep_scaling,
        )  # fmt: skip
        self.source = build_source(config)
        self.stream = BatchStream(self.source, batch_size=config.train_batch_size, seed=config.seed,
                                  rank=self.accelerator.process_index, world_size=self.accelerator.num_processes)  # fmt: skip
        self.optimizer = self._optimizer()
        self.lr_scheduler = self._lr_scheduler()
        self.student, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            self.models.student, self.optimizer, self.lr_scheduler
        )
        self.step = 0
        self.micro_step = 0
        self.skipped_nan = 0

    # --- setup -------------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for _, p in self.models.trainable]
        kw = {"lr": self.cfg.learning_rate, "betas": (self.cfg.adam_beta1, self.cfg.adam_beta2),
              "weight_decay": self.cfg.adam_weight_decay, "eps": self.cfg.adam_epsilon}  # fmt: skip
        if self.cfg.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as err:
                raise RuntimeError("use_8bit_adam needs bitsandbytes (pip install bitsandbytes; CUDA only); "
                                   "run without --use-8bit-adam on this machine.") from err  # fmt: skip
            return bnb.optim.AdamW8bit(params, **kw)
        return torch.optim.AdamW(params, **kw)

    def _lr_scheduler(self):
        from diffusers.optimization import get_scheduler

        n = self.accelerator.num_processes  # the accelerated scheduler steps once per process
        return get_scheduler(self.cfg.lr_scheduler, optimizer=self.optimizer, num_warmup_steps=self.cfg.lr_warmup_steps * n,
                             num_training_steps=self.cfg.max_train_steps * n)  # fmt: skip

    # --- the model callables of the objective --------------------------------------------------------------
    def _student_fn(self, sample, t, cond, w_emb):
        from lora_training.teachers import unet_call

        return unet_call(self.student, sample, t, cond, w_emb)

    def _teacher_fn(self, sample, t, cond):
        from lora_training.teachers import adapters_disabled, unet_call

        m = self.models
        if m.teacher is not None:
            return unet_call(m.teacher, sample, t, cond)
        with adapters_disabled(m.student):
            return unet_call(m.student, sample, t, cond)

    def _target_fn(self, sample, t, cond, w_emb):
        from lora_training.teachers import unet_call

        with self._ema_weights():
            return unet_call(self.models.student, sample, t, cond, w_emb)

    @contextlib.contextmanager
    def _ema_weights(self):
        """Temporarily swap the EMA tensors into the trainable parameters (no copies: pointer swap)."""
        if self.models.ema is None:
            yield
            return
        ema = self.models.ema.shadow_params
        params = [p for _, p in self.models.trainable]
        for p, e in zip(params, ema, strict=True):
            p.data, e.data = e.data, p.data
        try:
            yield
        finally:
            for p, e in zip(params, ema, strict=True):
                p.data, e.data = e.data, p.data

    # --- batches -----------------------------------------------------------------------------------------
    def _prepare_batch(self, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, dict, dict | None]:
        """Clean latents x0 (sampled from the VAE posterior with ``gen``) and the text conditioning."""
        from lora_training.teachers import encode_prompts, unconditional

        device, parts = self.accelerator.device, self.models.parts
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"].to(device), batch["latent_std"].to(device)
            cond = {"encoder_hidden_states": batch["prompt_embeds"].to(device)}
            if "text_embeds" in batch:
                cond.update(
                    text_embeds=batch["text_embeds"].to(device), time_ids=batch["time_ids"].to(device)
                )
            uncond = None
            if self.objective.with_teacher:
                if parts.is_sdxl:
                    uncond = unconditional(parts, cond, resolution=self.cfg.resolution, device=device)
                else:
                    uncond = {"encoder_hidden_states": batch["uncond_embeds"].to(device)}
        else:
            with torch.no_grad():
                pixels = batch["pixel_values"].to(device, parts.vae.dtype)
                dist = parts.vae.encode(pixels).latent_dist
                mean, std = dist.mean * parts.vae_scaling_factor, dist.std * parts.vae_scaling_factor
                cond = encode_prompts(parts, batch["caption"], resolution=self.cfg.resolution, device=device)
                uncond = unconditional(parts, cond, resolution=self.cfg.resolution, device=device) \
                    if self.objective.with_teacher else None  # fmt: skip
        noise = torch.randn(mean.shape, generator=gen, dtype=torch.float32).to(device, mean.dtype)
        return (mean + std * noise).float(), cond, uncond

    # --- checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<step>`` (main process) and wait for all processes."""
        acc = self.accelerator
        folder = None
        if acc.is_main_process:
            rng = {"torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            state = {"step": self.step, "micro_step": self.micro_step, "epoch": self.stream.position.epoch,
                     "batch": self.stream.position.batch, "skipped_nan": self.skipped_nan,
                     "config": self.cfg.to_dict()}  # fmt: skip
            names = [n for n, _ in self.models.trainable]
            ema = (
                None
                if self.models.ema is None
                else dict(zip(names, self.models.ema.shadow_params, strict=True))
            )
            folder = ckpt.save_checkpoint(
                self.out / f"checkpoint-{self.step}",
                trainable={n: p for n, p in self.models.trainable}, ema=ema,
                optimizer_state=self.optimizer.state_dict(), scheduler_state=self.lr_scheduler.state_dict(),
                state=state, rng=rng, total_limit=self.cfg.checkpoints_total_limit,
            )  # fmt: skip
        acc.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, EMA, optimizer, scheduler, step, data position and RNG states."""
        data = ckpt.load_checkpoint(folder)
        names = [n for n, _ in self.models.trainable]
        if sorted(names) != sorted(data["trainable"]):
            raise ValueError(f"checkpoint {folder} was written for different trainable weights (another method, rank "
                             "or target modules); resume with the same configuration.")  # fmt: skip
        with torch.no_grad():
            for n, p in self.models.trainable:
                p.copy_(data["trainable"][n])
            if self.models.ema is not None:
                if data["ema"] is None:
                    raise ValueError(
                        f"checkpoint {folder} has no EMA weights; resume with the same target setting."
                    )
                for (n, _), e in zip(self.models.trainable, self.models.ema.shadow_params, strict=True):
                    e.copy_(data["ema"][n])
        self.optimizer.load_state_dict(data["optimizer"])
        self.lr_scheduler.load_state_dict(data["lr_scheduler"])
        s = data["state"]
        self.step, self.micro_step, self.skipped_nan = s["step"], s["micro_step"], s["skipped_nan"]
        self.stream.position = DataPosition(s["epoch"], s["batch"])
        torch.set_rng_state(data["rng"]["torch_cpu"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [data["rng"][k] for k in sorted(data["rng"]) if k.startswith("cuda_")]
            )
        logger.info("resumed from %s at step %d", folder, self.step)

    # --- the loop ----------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run until ``max_train_steps`` optimizer steps, checkpointing, validating and exporting on the way."""
        from tqdm.auto import tqdm

        from lora_training.outputs import export_final, write_validation_grid

        cfg, acc = self.cfg, self.accelerator
        resume = ckpt.resolve_resume(cfg.output_dir, cfg.resume_from_checkpoint)
        if resume is not None:
            self.load_checkpoint(resume)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        result = TrainResult(steps=self.step, final_loss=math.nan)
        batches = iter(self.stream)
        bar = tqdm(
            total=cfg.max_train_steps,
            initial=self.step,
            disable=not acc.is_local_main_process,
            desc="lcm " + cfg.method,
        )
        self.student.train()
        while self.step < cfg.max_train_steps:
            step_loss = 0.0
            finite = True
            for _ in range(cfg.gradient_accumulation_steps):
                gen = step_generator(cfg.seed, acc.process_index, self.micro_step)
                self.micro_step += 1
                batch = next(batches)
                with acc.accumulate(self.student), acc.autocast():
                    latents, cond, uncond = self._prepare_batch(batch, gen)
                    loss = lcm_loss(self.objective, student=self._student_fn, teacher=self._teacher_fn,
                                    target=self._target_fn, latents=latents, cond=cond, uncond=uncond, generator=gen)  # fmt: skip
                    ok = acc.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item() == 1.0
                    if not ok:
                        finite = False
                        self.optimizer.zero_grad(set_to_none=True)
                        break
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        acc.clip_grad_norm_([p for _, p in self.models.trainable], cfg.max_grad_norm)
                    # accelerate skips these until the last micro-step of the accumulation window
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step_loss += loss.detach().item() / cfg.gradient_accumulation_steps
            if not finite:
                if cfg.nan_policy == "raise":
                    raise RuntimeError(f"the loss became NaN/inf at step {self.step + 1}; lower learning_rate, use bf16 "
                                       "instead of fp16, check the data, or set nan_policy='skip'.")  # fmt: skip
                self.skipped_nan += 1
                logger.warning(
                    "non-finite loss at step %d: step skipped (%d so far)", self.step + 1, self.skipped_nan
                )
            elif self.models.ema is not None:
                self.models.ema.step([p for _, p in self.models.trainable])
            self.step += 1
            result.losses.append(step_loss)
            result.final_loss = step_loss
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4g}", lr=f"{self.lr_scheduler.get_last_lr()[0]:.2e}")
            if self.step % cfg.log_every == 0:
                logger.info("step %d loss %.5g", self.step, step_loss)
                if acc.is_main_process:
                    with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as log:
                        log.write(json.dumps({"step": self.step, "loss": step_loss, "lr": self.lr_scheduler.get_last_lr()[0],
                                              "time": time.time()}) + "\n")  # fmt: skip
            if self.step % cfg.checkpointing_steps == 0 or self.step == cfg.max_train_steps:
                self.save_checkpoint()
            if cfg.validation_steps and self.step % cfg.validation_steps == 0 and acc.is_main_process:
                with self._ema_weights():
                    write_validation_grid(self, self.out / "validation" / f"step-{self.step:06d}.png")
        bar.close()
        result.steps, result.skipped_nan_steps = self.step, self.skipped_nan
        acc.wait_for_everyone()
        if acc.is_main_process:
            with self._ema_weights():
                result.outputs = export_final(self)
        acc.wait_for_everyone()
        return result
