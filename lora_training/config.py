"""Configuration of the LCM distillation / fine-tuning trainer: one dataclass, every choice a field.

Defaults follow the LCM-LoRA reference (diffusers ``examples/consistency_distillation``, LCM-LoRA report
arXiv 2311.05556): rank 64, alpha 64, lr 1e-4, AdamW wd 1e-2, grad clip 1.0, DDIM solver, N = 50, w in [5, 15].
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METHODS = ("lora", "lcd", "lcf")
TARGETS = ("student", "ema")
LOSSES = ("l2", "huber")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
RENAMED_KEYS = {"num_ddim_timesteps": "original_inference_steps"}  # old config key -> field
DEFAULT_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
    "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (read by the CLI)."""
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(kw_only=True)
class TrainConfig:
    """Everything the trainer needs. Paths are strings so the config round-trips through JSON."""

    # --- what to train ---
    method: str = _f(
        "lora", f"one of {METHODS}: LCM-LoRA distillation, full-model LCD (w-embedding), LCF fine-tuning"
    )
    pretrained_model: str = _f(
        "", "teacher / base model: a diffusers pipeline folder or a single-file .safetensors"
    )
    single_file_config: str | None = _f(
        None, "diffusers config folder for a single-file checkpoint (needed offline)"
    )
    teacher_model: str | None = _f(
        None, "a separate teacher folder (default: the base UNet with adapters disabled)"
    )
    init_lora: str | None = _f(
        None, "start from this LCM-LoRA (.safetensors, diffusers format); LCF needs it or an LCM"
    )
    output_dir: str = _f("runs/lcm-lora", "where checkpoints, validation grids and the final adapter go")
    # --- data ---
    train_data_dir: str | None = _f(None, "image folder with caption sidecars (img.png + img.txt)")
    webdataset_shards: list[str] = _f([], "webdataset .tar shards (pairs KEY.jpg/png + KEY.txt), streamed")
    hf_dataset: str | None = _f(None, "a local Hugging Face dataset folder (save_to_disk); needs `datasets`")
    hf_image_column: str = _f("image", "image column of the Hugging Face dataset")
    hf_caption_column: str = _f("text", "caption column of the Hugging Face dataset")
    cache_file: str | None = _f(
        None, "precomputed latent/text-embedding cache (.safetensors, `lcm-plugin train cache`)"
    )
    resolution: int = _f(512, "training resolution in pixels (images are resized and centre-cropped)")
    max_bad_fraction: float = _f(
        0.05, "abort when more than this fraction of images is corrupt or lacks a caption"
    )
    # --- LCM distillation ---
    original_inference_steps: int = _f(
        50,
        "N, the distillation grid: the teacher solves between its N timesteps, k = T // N "
        "apart (the paper's k = 20 is N = 50; diffusers' scripts: --num_ddim_timesteps)",
    )
    solver: str = _f(
        "ddim", "teacher ODE solver: ddim, euler or dpmpp_2m (dpmpp_2m costs one more teacher pass)"
    )
    w_min: float = _f(5.0, "lower bound of the sampled guidance w (LCM formulation; CFG scale = w + 1)")
    w_max: float = _f(15.0, "upper bound of the sampled guidance w")
    omega: float | None = _f(None, "fixed guidance w instead of sampling U[w_min, w_max] (LCM-LoRA used 7.5)")
    target: str | None = _f(
        None,
        f"target network, one of {TARGETS}: the student under no-grad, or an EMA copy; None picks 'ema' for full "
        "LCD (as diffusers' full-LCD script; a student target collapsed in our toy runs) and 'student' otherwise",
    )
    ema_decay: float = _f(0.95, "EMA decay of the target network (diffusers 0.95, paper 0.999943)")
    loss_type: str = _f("huber", f"one of {LOSSES}: L2 or pseudo-Huber sqrt(d^2 + c^2) - c")
    huber_c: float = _f(0.001, "pseudo-Huber c")
    timestep_scaling: float = _f(10.0, "boundary-condition timestep scaling (LCM 10)")
    sigma_data: float = _f(0.5, "boundary-condition sigma_data")
    time_cond_proj_dim: int = _f(256, "w-embedding width for full-model LCD")
    # --- LoRA ---
    lora_rank: int = _f(64, "LoRA rank")
    lora_alpha: float = _f(64.0, "LoRA alpha (scale = alpha / rank)")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_target_modules: list[str] = _f(list(DEFAULT_LORA_TARGETS), "UNet module name suffixes that get LoRA")
    # --- optimisation ---
    train_batch_size: int = _f(12, "batch size per device")
    gradient_accumulation_steps: int = _f(1, "gradient accumulation steps")
    max_train_steps: int = _f(4000, "optimizer steps")
    learning_rate: float = _f(1e-4, "peak learning rate")
    lr_scheduler: str = _f("constant", "diffusers lr scheduler name (constant, cosine, linear, ...)")
    lr_warmup_steps: int = _f(500, "warm-up steps")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_weight_decay: float = _f(1e-2, "AdamW weight decay")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)")
    use_8bit_adam: bool = _f(False, "bitsandbytes AdamW8bit")
    nf4_base: bool = _f(False, "QLoRA-style NF4 base UNet via bitsandbytes (GPU only)")
    mixed_precision: str = _f("no", f"one of {MIXED_PRECISIONS}")
    gradient_checkpointing: bool = _f(False, "trade compute for memory in the UNet")
    seed: int = _f(0, "seed of every random choice (data order, noise, timesteps, w)")
    # --- bookkeeping ---
    checkpointing_steps: int = _f(500, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = _f(3, "keep at most this many checkpoints")
    resume_from_checkpoint: str | None = _f(None, "'latest' or a checkpoint folder")
    validation_steps: int = _f(0, "write a validation grid every N steps (0: never)")
    validation_prompts: list[str] = _f([], "prompts of the validation grid")
    validation_num_steps: list[int] = _f([1, 2, 4], "LCM steps shown in the validation grid")
    log_every: int = _f(10, "log the loss every N steps")
    nan_policy: str = _f("raise", "on a non-finite loss: 'raise' or 'skip' the step (counted)")

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if self.method not in METHODS:
            bad(f"method {self.method!r} is not supported; use one of {METHODS}.")
        if not self.pretrained_model:
            bad("pretrained_model is required: pass a diffusers pipeline folder or a single-file checkpoint.")
        from lcm_plugin.core.solvers import check_solver  # lazy: keeps `lcm-plugin --help` free of torch

        check_solver(self.solver)
        if self.target is None:
            self.target = "ema" if self.method == "lcd" else "student"
        if self.target not in TARGETS:
            bad(f"target {self.target!r} is not supported; use one of {TARGETS}.")
        if self.loss_type not in LOSSES:
            bad(f"loss_type {self.loss_type!r} is not supported; use one of {LOSSES}.")
        if self.mixed_precision not in MIXED_PRECISIONS:
            bad(f"mixed_precision {self.mixed_precision!r} is not supported; use one of {MIXED_PRECISIONS}.")
        if self.nan_policy not in ("raise", "skip"):
            bad(f"nan_policy must be 'raise' or 'skip', got {self.nan_policy!r}.")
        if not 1 <= self.original_inference_steps <= 1000:
            bad(
                f"original_inference_steps must be in [1, 1000], got {self.original_inference_steps}; LCM uses 50 "
                "(k = 20)."
            )
        if self.omega is None and not 0 <= self.w_min <= self.w_max:
            bad(
                f"need 0 <= w_min <= w_max, got w_min={self.w_min}, w_max={self.w_max}; or set a fixed omega."
            )
        if self.omega is not None and self.omega < 0:
            bad(f"omega must be >= 0 (0 = no guidance), got {self.omega}.")
        if not 0.0 <= self.ema_decay < 1.0:
            bad(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.huber_c <= 0:
            bad(f"huber_c must be > 0, got {self.huber_c}; the reference uses 0.001.")
        for name in ("lora_rank", "train_batch_size", "gradient_accumulation_steps", "max_train_steps", "resolution",
                     "checkpointing_steps", "log_every", "time_cond_proj_dim"):  # fmt: skip
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.lora_alpha <= 0:
            bad(f"lora_alpha must be > 0, got {self.lora_alpha}.")
        if self.learning_rate <= 0:
            bad(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.lr_warmup_steps < 0 or self.validation_steps < 0:
            bad("lr_warmup_steps and validation_steps must be >= 0.")
        if not self.lora_target_modules:
            bad(
                "lora_target_modules is empty; list the UNet modules that get LoRA (e.g. to_q to_k to_v to_out.0)."
            )
        if not 0 <= self.max_bad_fraction <= 1:
            bad(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}.")
        if any(n < 1 for n in self.validation_num_steps):
            bad(f"validation_num_steps must be >= 1, got {self.validation_num_steps}.")
        sources = [
            bool(self.train_data_dir),
            bool(self.webdataset_shards),
            bool(self.hf_dataset),
            bool(self.cache_file),
        ]
        if sum(sources) == 0:
            bad("no training data: pass train_data_dir, webdataset_shards, hf_dataset or cache_file.")
        if sum(sources) > 1:
            bad("pass exactly one of train_data_dir, webdataset_shards, hf_dataset, cache_file.")
        if self.method == "lcf" and self.init_lora is None and not self._is_lcm_folder():
            bad("LCF fine-tunes an existing LCM: pass init_lora (an LCM-LoRA) or a pretrained_model whose UNet has a "
                "w-embedding (time_cond_proj_dim), i.e. a full LCM.")  # fmt: skip
        if self.method == "lcd" and self.init_lora is not None:
            bad("init_lora applies to method 'lora' or 'lcf'; full-model LCD trains the whole UNet.")

    def _is_lcm_folder(self) -> bool:
        cfg = Path(self.pretrained_model) / "unet" / "config.json"
        if not cfg.is_file():
            return False
        return bool(json.loads(cfg.read_text()).get("time_cond_proj_dim"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones.

        Keys renamed since (``RENAMED_KEYS``: ``num_ddim_timesteps``) are read under their new name, with a warning,
        so a ``train_config.json`` of an earlier run still loads.
        """
        data = dict(data)
        for old, new in RENAMED_KEYS.items():
            if old in data:
                if new in data:
                    raise ValueError(
                        f"config sets both {old!r} and {new!r} (its new name); keep only {new!r}."
                    )
                logger.warning("config key %r is now called %r; read as such", old, new)
                data[new] = data.pop(old)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**data)
