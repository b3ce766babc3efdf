"""Train the toy teacher: a small Stable Diffusion (AutoencoderKL + UNet2DConditionModel + CLIPTextModel).

Recipe (as SD, shrunk): 1) train the autoencoder on toy images; 2) encode the training set once and set the
VAE ``scaling_factor`` to 1/std of the latents; 3) train the UNet (epsilon prediction, SD noise schedule) and
the text encoder jointly, with 10% empty captions for classifier-free guidance, min-SNR-5 loss weighting and
an EMA of the weights; 4) fine-tune the VAE decoder alone (encoder frozen) for sharper edges; 5) save a
standard ``StableDiffusionPipeline`` folder (fp16 safetensors).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lcm_plugin import core
from lcm_plugin.toy import models, world
from lcm_plugin.toy.configs import TeacherConfig
from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer

logger = logging.getLogger(__name__)


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at step ``total`` (held at 0 after it)."""
    total = max(total, 1)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def to_model_range(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float tensor in [-1, 1], the range SD's VAE expects."""
    return torch.from_numpy(images_uint8).float().div(127.5).sub(1.0)


def train_vae(vae, images: torch.Tensor, cfg: TeacherConfig, generator: torch.Generator):
    """Train the autoencoder in place (MSE reconstruction + small KL, cosine learning rate) and return it."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae.train()
    start = time.time()
    for step in tqdm(range(cfg.vae_steps), desc="vae", mininterval=10):
        for g in opt.param_groups:  # cosine decay: the short CPU budget needs a well-converged end point
            g["lr"] = cosine_lr(cfg.vae_lr, step, cfg.vae_steps)
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=generator)
        x = images[idx.to(images.device)]
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=generator).to(x.device)
        rec = vae.decode(post.mean + post.std * eps).sample
        loss = F.mse_loss(rec, x) + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            logger.info("vae step %d loss %.5f", step, loss.item())
        if cfg.vae_max_minutes > 0 and time.time() - start > cfg.vae_max_minutes * 60:
            logger.warning(
                "vae_max_minutes reached: stopping the VAE at step %d of %d (loss %.5f)",
                step + 1,
                cfg.vae_steps,
                loss.item(),
            )
            break
    vae.eval()
    return vae


def finetune_decoder(vae, images: torch.Tensor, cfg: TeacherConfig, generator: torch.Generator):
    """Fine-tune only the VAE decoder (encoder frozen, so the latent space the UNet learnt is unchanged) for
    sharper edges, as SD's ft-MSE VAE did: MSE + L1 on reconstructions of the posterior mode."""
    for p in vae.parameters():
        p.requires_grad_(False)
    params = [p for name, p in vae.named_parameters() if name.startswith(("decoder.", "post_quant_conv."))]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    vae.train()
    start = time.time()
    for step in tqdm(range(cfg.decoder_steps), desc="decoder", mininterval=10):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(cfg.decoder_lr, step, cfg.decoder_steps)
        x = images[torch.randint(0, len(images), (cfg.vae_batch,), generator=generator).to(images.device)]
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.decoder_steps - 1:
            logger.info("decoder step %d loss %.5f (mse %.5f)", step, loss.item(), F.mse_loss(rec, x).item())
        if cfg.decoder_max_minutes > 0 and time.time() - start > cfg.decoder_max_minutes * 60:
            logger.warning(
                "decoder_max_minutes reached: stopping at step %d of %d", step + 1, cfg.decoder_steps
            )
            break
    for p in vae.parameters():
        p.requires_grad_(True)
    vae.eval()
    return vae


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Unscaled latent means of ``images`` (the VAE posterior mode)."""
    return torch.cat(
        [vae.encode(images[i : i + batch]).latent_dist.mode() for i in range(0, len(images), batch)]
    )


def _save_pipeline(vae, text_encoder, tokenizer, unet, tok_dir: Path, out_dir: Path) -> None:
    """Save a StableDiffusionPipeline folder in fp16, replacing ``out_dir`` only once it is complete."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=models.build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy2(tok_dir / name, tmp / "tokenizer" / name)
    # Half precision halves the shipped size; load_pipeline casts back to float32 for CPU inference.
    from safetensors.torch import load_file, save_file

    for f in tmp.rglob("*.safetensors"):
        save_file({k: v.half().contiguous() for k, v in load_file(str(f)).items()}, str(f))
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def unet_lr_at(cfg: TeacherConfig, step: int) -> float:
    """Learning rate of UNet step ``step``: linear warm-up, then constant or a cosine decay to 0."""
    if cfg.lr_schedule == "cosine" and step >= cfg.warmup:
        return cosine_lr(cfg.unet_lr, step - cfg.warmup, cfg.unet_steps - cfg.warmup)
    return cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup)


def train_teacher(
    out_dir: str | os.PathLike,
    cfg: TeacherConfig,
    world_cfg: world.WorldConfig | None = None,
    resume: str | os.PathLike | None = None,
) -> Path:
    """Train the whole toy teacher and write it as a diffusers pipeline folder to ``out_dir``.

    With ``resume`` (a pipeline folder written by this function) the VAE is kept and the UNet/text encoder
    continue training from their saved (EMA) weights for another ``cfg.unet_steps`` steps.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    world_cfg = dataclasses.replace(world_cfg or world.WorldConfig(), pair_fraction=cfg.pair_fraction)
    device = models.checked_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # parameter initialisation of the stock diffusers/transformers modules
    tok_dir = build_tokenizer_files(out.with_name(out.name + ".tokenizer"))
    tokenizer = load_tokenizer(tok_dir)

    t0 = time.time()
    logger.info("drawing %d training images", cfg.n_train)
    arrays, captions, _ = world.make_arrays(world_cfg, "train", cfg.n_train)
    images = to_model_range(arrays).to(device)
    logger.info("data ready in %.0f s", time.time() - t0)

    if resume is not None:
        previous = models.load_pipeline(resume)
        vae, text_encoder, unet = (
            previous.vae.to(device),
            previous.text_encoder.to(device),
            previous.unet.to(device),
        )
        if len(previous.tokenizer) != len(tokenizer):
            raise ValueError(f"{resume} was trained with another tokenizer; train from scratch instead")
        unet.train()
        text_encoder.train()
        latents = encode_latents(vae, images)
        scale = float(vae.config.scaling_factor)
    else:
        vae = train_vae(models.build_vae().to(device), images, cfg, gen)
        latents = encode_latents(vae, images)
        scale = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scale)
        text_encoder = models.build_text_encoder(
            len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id
        )
        text_encoder, unet = text_encoder.to(device), models.build_unet().to(device)
    latents = latents * scale
    logger.info("vae done at %.0f s; scaling_factor %.4f", time.time() - t0, scale)

    ids = tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    # diffusers' EMAModel and its warm-up: decay min(ema_decay, (1 + n) / (10 + n)) at update n >= 1, 0 at n = 0
    ema = EMAModel(params, decay=cfg.ema_decay, foreach=True)
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    noise_sched = DDPMScheduler(**{k: v for k, v in models.SD_SCHEDULE.items() if k != "set_alpha_to_one"})
    abar = noise_sched.alphas_cumprod.to(device)
    snr = abar / (1 - abar)
    unet_t0 = time.time()

    def save() -> None:  # the EMA weights are the ones saved
        ema.store(params)
        ema.copy_to(params)
        _save_pipeline(vae, text_encoder, tokenizer, unet, tok_dir, out)
        ema.restore(params)

    for step in tqdm(range(cfg.unet_steps), desc="unet", mininterval=10):
        lr = unet_lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(latents), (cfg.unet_batch,), generator=gen).to(device)
        x0, tok = latents[idx], ids[idx].clone()
        drop = (torch.rand(cfg.unet_batch, generator=gen) < cfg.cfg_dropout).to(device)
        tok[drop] = empty
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        zt = core.add_noise(x0, eps, core.alpha_prod_at(abar, t, x0))  # as DDPMScheduler.add_noise
        pred = unet(zt, t, text_encoder(tok)[0]).sample
        per = (pred - eps).pow(2).mean(dim=(1, 2, 3))
        w = torch.clamp(snr[t], max=cfg.snr_gamma) / snr[t] if cfg.snr_gamma > 0 else torch.ones_like(per)
        loss = (per * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        if step % 50 == 0:
            logger.info("unet step %d loss %.4f lr %.2e (%.0f s)", step, loss.item(), lr, time.time() - t0)
        if (step + 1) % cfg.save_every == 0:
            save()
        if cfg.max_minutes > 0 and time.time() - unet_t0 > cfg.max_minutes * 60:
            logger.warning(
                "max_minutes reached: stopping the UNet phase at step %d of %d", step + 1, cfg.unet_steps
            )
            break
    if cfg.decoder_steps > 0:
        # Independent of the UNet phase (own generator), so it gives the same decoder whenever it runs.
        finetune_decoder(vae, images, cfg, torch.Generator().manual_seed(cfg.seed + 1))
    save()
    shutil.rmtree(tok_dir, ignore_errors=True)
    logger.info("teacher saved to %s in %.1f min", out, (time.time() - t0) / 60)
    return out
