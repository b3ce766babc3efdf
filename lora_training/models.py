"""Building the networks of a run: the student (LoRA or full), the teacher, the EMA target, what trains."""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lora_training.config import TrainConfig
from lora_training.teachers import TeacherParts, lcd_student_from_teacher, load_pipeline, teacher_parts

logger = logging.getLogger(__name__)


@dataclass
class TrainModels:
    """``teacher`` is None when the student's base (adapters disabled) is the teacher, or for LCF."""

    parts: TeacherParts
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    trainable: list[tuple[str, torch.nn.Parameter]]
    ema: object | None  # diffusers.training_utils.EMAModel over the trainable parameters (target "ema")
    w_embedding_dim: int | None
    is_lora: bool


def add_lora(unet, *, rank: int, alpha: float, target_modules: list[str], dropout: float, seed: int,
             rank_pattern: dict | None = None, alpha_pattern: dict | None = None) -> None:  # fmt: skip
    """Add a trainable peft LoRA adapter ("default") to a diffusers UNet; B starts at zero (student = teacher).

    peft initialises A from torch's global RNG: it runs inside ``fork_rng`` with ``seed``, so the caller's
    global RNG state is untouched and the init is reproducible.
    """
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
                        rank_pattern=rank_pattern or {}, alpha_pattern=alpha_pattern or {})  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            unet.add_adapter(config)
        except ValueError as err:
            raise ValueError(
                f"LoRA target modules {list(target_modules)} do not fit this UNet: {err}"
            ) from err


def load_lora_weights_into(unet, path: str, *, seed: int, dropout: float = 0.0) -> None:
    """Add an adapter shaped like the LoRA file ``path`` (diffusers or kohya keys, read by the adapters
    package) and copy its weights in, ready to train further (LCF from an LCM-LoRA, or continued distillation)."""
    from lcm_plugin.adapters.convert import load_adapter

    if not Path(path).is_file():
        raise FileNotFoundError(f"init_lora {path} does not exist.")
    adapter = load_adapter(path)
    mods = {n[len("unet.") :]: m for n, m in adapter.modules.items() if n.startswith("unet.")}
    if not mods:
        raise ValueError(f"{path} holds no UNet LoRA weights; pass an LCM-LoRA file.")
    names = dict(unet.named_modules())
    missing = [p for p in mods if p not in names]
    if missing:
        raise ValueError(f"LoRA {path} does not fit this UNet (architecture mismatch): {len(missing)} modules are "
                         f"not in the model, e.g. {missing[0]}; use a LoRA trained for this base model.")  # fmt: skip
    ranks = [m.rank for m in mods.values()]
    rank = max(set(ranks), key=ranks.count)
    alphas = [m.alpha_value for m in mods.values()]
    alpha = max(set(alphas), key=alphas.count)
    add_lora(unet, rank=rank, alpha=alpha, target_modules=sorted(mods), dropout=dropout, seed=seed,
             rank_pattern={p: m.rank for p, m in mods.items() if m.rank != rank},
             alpha_pattern={p: m.alpha_value for p, m in mods.items() if m.alpha_value != alpha})  # fmt: skip
    names = dict(unet.named_modules())  # peft replaced the targeted modules
    with torch.no_grad():
        for p, m in mods.items():
            layer = names[p]
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            if a.shape != m.down.shape or b.shape != m.up.shape:
                raise ValueError(f"LoRA {path} does not fit this UNet (architecture mismatch) at {p}: LoRA shapes "
                                 f"{tuple(m.down.shape)}/{tuple(m.up.shape)} vs model {tuple(a.shape)}/{tuple(b.shape)}.")  # fmt: skip
            a.copy_(m.down)
            b.copy_(m.up)


def _check_teacher_fits(teacher, student) -> None:
    keys = ("in_channels", "out_channels", "cross_attention_dim", "block_out_channels", "sample_size")
    diff = {
        k: (teacher.config.get(k), student.config.get(k))
        for k in keys
        if teacher.config.get(k) != student.config.get(k)
    }
    if diff:
        raise ValueError(
            f"teacher and student UNets differ in architecture {diff}; use a teacher of the same base model."
        )


def _load_unet(path: str):
    from diffusers import UNet2DConditionModel

    p = Path(path)
    sub = p / "unet" if (p / "unet" / "config.json").is_file() else p
    if not (sub / "config.json").is_file():
        raise FileNotFoundError(f"teacher_model {p} holds no UNet (no unet/config.json).")
    return UNet2DConditionModel.from_pretrained(str(sub), local_files_only=True)


def _nf4_unet(path: str, compute_dtype: torch.dtype):
    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        raise RuntimeError("nf4_base (QLoRA-style 4-bit base) needs bitsandbytes and a CUDA GPU; neither is usable "
                           "here. Drop --nf4-base (bf16/fp16 mixed precision also saves memory).")  # fmt: skip
    from diffusers import BitsAndBytesConfig, UNet2DConditionModel

    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=compute_dtype)  # fmt: skip
    return UNet2DConditionModel.from_pretrained(
        path, subfolder="unet", quantization_config=qc, local_files_only=True
    )


def build_models(cfg: TrainConfig, accelerator) -> TrainModels:
    """Load the teacher pipeline and build the student/teacher/EMA for ``cfg.method``."""
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    if cfg.nf4_base and cfg.method != "lora":
        raise ValueError("nf4_base quantises a frozen base: it only applies to method 'lora'.")
    pipe = load_pipeline(cfg.pretrained_model, single_file_config=cfg.single_file_config)
    if cfg.nf4_base:
        pipe.register_modules(unet=_nf4_unet(cfg.pretrained_model, weight_dtype))
    parts = teacher_parts(pipe)
    device = accelerator.device
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False).eval().to(device, weight_dtype)
    unet = pipe.unet
    unet.requires_grad_(False)
    teacher, w_dim, is_lora = None, None, False
    if cfg.method == "lora" or (cfg.method == "lcf" and cfg.init_lora):
        is_lora = True
        if unet.config.get("time_cond_proj_dim") and cfg.method == "lora":
            logger.warning(
                "the base UNet already has a w-embedding (a full LCM?); LoRA distillation ignores it."
            )
        if cfg.init_lora:
            load_lora_weights_into(unet, cfg.init_lora, seed=cfg.seed, dropout=cfg.lora_dropout)
        else:
            add_lora(unet, rank=cfg.lora_rank, alpha=cfg.lora_alpha, target_modules=cfg.lora_target_modules,
                     dropout=cfg.lora_dropout, seed=cfg.seed)  # fmt: skip
        if not cfg.nf4_base:
            unet.to(device, weight_dtype)
        for n, p in unet.named_parameters():  # LoRA weights train in float32 under mixed precision
            if "lora_" in n:
                p.data = p.data.float()
        student = unet
        if cfg.method == "lora" and cfg.teacher_model:
            teacher = _load_unet(cfg.teacher_model).requires_grad_(False).eval().to(device, weight_dtype)
            _check_teacher_fits(teacher, student)
        if unet.config.get("time_cond_proj_dim"):
            w_dim = int(unet.config["time_cond_proj_dim"])
    elif cfg.method == "lcd":
        teacher = _load_unet(cfg.teacher_model) if cfg.teacher_model else unet
        teacher.requires_grad_(False).eval().to(device, weight_dtype)
        student = (
            lcd_student_from_teacher(teacher, cfg.time_cond_proj_dim).float().to(device).requires_grad_(True)
        )
        w_dim = cfg.time_cond_proj_dim
    else:  # LCF of a full LCM
        student = unet.float().to(device).requires_grad_(True)
        w_dim = int(unet.config["time_cond_proj_dim"])
    if cfg.cache_file and cfg.validation_steps == 0 and is_lora:
        # Latents and embeddings come from the cache and the LoRA export needs no pipeline: free the encoders.
        drop = {
            n: None for n in ("vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None
        }
        pipe.register_modules(**drop)
        parts.vae = None
        logger.info("training from the cache: released %s", ", ".join(drop))
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: no parameter requires grad (check lora_target_modules).")
    ema = target_ema([p for _, p in trainable], cfg.ema_decay) if cfg.target == "ema" else None
    n_params = sum(p.numel() for _, p in trainable)
    logger.info("method %s: %.2fM trainable parameters, teacher: %s", cfg.method, n_params / 1e6,
                "none (LCF)" if cfg.method == "lcf" else ("separate UNet" if teacher is not None else "base UNet, adapters disabled"))  # fmt: skip
    return TrainModels(parts=parts, student=student, teacher=teacher, trainable=trainable, ema=ema,
                       w_embedding_dim=w_dim, is_lora=is_lora)  # fmt: skip


def target_ema(params: list[torch.nn.Parameter], decay: float):
    """diffusers' ``EMAModel`` of ``params`` with a constant ``decay`` from the first update on:
    theta_ema <- decay * theta_ema + (1 - decay) * theta, the target network of LCD (as the ``update_ema`` of
    diffusers' LCD script). ``update_after_step=-1`` and ``min_decay=decay`` switch off EMAModel's warm-up
    (a decay of 0 on the first update, then (1 + n) / (10 + n))."""
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=decay, min_decay=decay, update_after_step=-1, foreach=True)


def clone_frozen(module: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy (used by the reference-implementation benchmark)."""
    return copy.deepcopy(module).requires_grad_(False).eval()
