"""Configuration dataclasses of the toy commands (no torch import, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherConfig:
    """Settings of ``lcm-plugin toy train-teacher``; the defaults produced the shipped teacher.

    Args:
        n_train: number of training images drawn from the ``train`` split.
        vae_steps / vae_batch / vae_lr: autoencoder training.
        unet_steps / unet_batch / unet_lr: UNet + text encoder training.
        warmup: linear learning-rate warm-up steps of the UNet.
        lr_schedule: UNet learning rate after the warm-up: "constant", or "cosine" (decays to 0 at
            ``unet_steps``; with a ``max_minutes`` cap, size ``unet_steps`` to what fits).
        pair_fraction: share of two-object scenes among the training images (the world draws 0.3; more
            pairs put more of the training on binding colours and shapes to the right object).
        cfg_dropout: fraction of captions replaced by "" (enables classifier-free guidance).
        ema_decay: EMA decay of the UNet/text-encoder weights that are saved (diffusers' ``EMAModel``, whose
            warm-up ramps the decay as min(ema_decay, (1 + n) / (10 + n)) over the updates n).
        kl_weight: weight of the VAE's KL term.
        snr_gamma: min-SNR loss weighting gamma (Hang et al. 2023); 0 disables it.
        seed: seed of every generator used in training.
        threads: torch CPU threads (1 is fastest on a busy shared CPU: 2 threads stall on each other).
        vae_max_minutes / max_minutes: caps on the wall time of the VAE / UNet phase (stop early and log the
            step reached; CPU speed varies on shared machines); 0 = no cap.
        decoder_steps / decoder_lr / decoder_max_minutes: final decoder-only fine-tuning (encoder frozen).
        save_every: save the pipeline every this many UNet steps (so a killed run still leaves a model).
        device: where the models train ("cpu", "cuda", "cuda:1"); the random draws stay on the CPU generator.
    """

    n_train: int = 30000
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 3e-3
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 100
    lr_schedule: str = "constant"
    pair_fraction: float = 0.3
    cfg_dropout: float = 0.1
    ema_decay: float = 0.999
    kl_weight: float = 1e-6
    snr_gamma: float = 5.0
    seed: int = 0
    threads: int = 1
    vae_max_minutes: float = 0.0
    max_minutes: float = 0.0
    save_every: int = 250
    decoder_steps: int = 3000
    decoder_lr: float = 1e-3
    decoder_max_minutes: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("n_train", "vae_batch", "unet_batch", "threads", "save_every", "warmup"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vae_steps < 0 or self.unet_steps < 0 or self.decoder_steps < 0:
            raise ValueError("vae_steps, unet_steps and decoder_steps must be >= 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.pair_fraction <= 1.0:
            raise ValueError(f"pair_fraction must be in [0, 1], got {self.pair_fraction}")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class JudgeTrainConfig:
    """Settings of ``lcm-plugin toy train-judge``; the defaults produced the shipped judge.

    Args:
        n_train: training images from the ``train`` split (plus the same number of ``heldout`` images, so the
            checker also knows the held-out colour/shape combinations).
        steps / batch / lr: optimisation.
        seed: seed of the initialisation and batch generator.
        threads: torch CPU threads.
    """

    n_train: int = 12000
    steps: int = 700
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("n_train", "steps", "batch", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
