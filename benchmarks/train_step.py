"""Per-step throughput and peak memory of our LCM-LoRA step vs a faithful re-implementation of the diffusers
reference step (``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py``), side by side.

Reference step: a separate fp32 teacher UNet copy, two teacher passes (cond, uncond) per step, VAE encode and
text encoder every step (no cache), student LoRA forward, target = student under no-grad.
Ours (what ``lora_training.trainer.Trainer`` runs): ONE UNet (teacher = base with adapters disabled), cond and
uncond batched into one teacher forward, latents and embeddings from the precomputed cache.
Both use the same LCM math (lcm_plugin.core) and the same LoRA (peft, the reference target modules).

Each variant runs in a fresh subprocess; peak memory = peak RSS (ru_maxrss) minus RSS after imports, i.e.
everything the variant allocates (weights, optimizer, activations).

    python benchmarks/train_step.py --workload toy --batch 16 --steps 5
    python benchmarks/train_step.py --workload sd15 --batch 1 --latent 32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def build(workload: str, with_encoders: bool = True):
    """(vae, text_encoder, tokenizer, unet) with random weights and the real architecture (encoders None if
    ``with_encoders`` is False)."""
    import tempfile

    import torch

    from lcm_plugin.toy import models as toy
    from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer

    torch.manual_seed(0)  # diffusers/transformers initialise from the global RNG (benchmark only)
    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(build_tokenizer_files(tmp))
    if workload == "toy":
        if not with_encoders:
            return None, None, tok, toy.build_unet()
        return toy.build_vae(), toy.build_text_encoder(len(tok), tok.bos_token_id, tok.eos_token_id), tok, toy.build_unet()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # Stable Diffusion 1.5 architecture (runwayml/stable-diffusion-v1-5 configs), random weights.
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    if not with_encoders:
        return None, None, tok, unet
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    return vae, te, tok, unet


def _pixels_and_captions(vae, batch: int, latent: int):
    import torch

    px = latent * 2 ** (len(vae.config.block_out_channels) - 1)
    pixels = torch.rand(batch, 3, px, px, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return pixels, ["a red circle on the left"] * batch


def _encode_text(tok, te, texts):
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return te(ids)[0]


def write_cache(workload: str, batch: int, latent: int, path: str) -> None:
    """What `lcm-plugin train cache` does, in its own process: encode once, save safetensors."""
    import torch
    from safetensors.torch import save_file

    vae, te, tok, _ = build(workload)
    pixels, captions = _pixels_and_captions(vae, batch, latent)
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
        sf = vae.config.scaling_factor
        save_file({"latent_mean": (dist.mean * sf).contiguous(), "latent_std": (dist.std * sf).contiguous(),
                   "prompt_embeds": _encode_text(tok, te, captions).contiguous(),
                   "uncond_embeds": _encode_text(tok, te, [""]).expand(batch, -1, -1).contiguous()}, path)


def reference_loss(obj, student, teacher, latents, cond: dict, uncond: dict, gen):
    """The diffusers reference script's LCM-LoRA loss on clean ``latents``: student prediction at t_{n+k}, the
    separate ``teacher`` UNet called twice (cond, then uncond), target = the student under no-grad at t_n.
    Same LCM math as ours (lora_training.lcd); only the teacher calls and the order differ."""
    import torch

    from lora_training.lcd import consistency_fn, draw, teacher_solve
    from lora_training.losses import consistency_loss
    from lora_training.teachers import unet_call

    d = draw(obj, latents, gen)
    a = obj.alphas_cumprod.to(latents.device)[d.t_start].reshape(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * d.noise
    pred = consistency_fn(obj, student, noisy, d.t_start, cond, None)

    def two_pass_teacher(s, t, c):
        half = s.shape[0] // 2
        first, second = ({k: v[:half] for k, v in c.items()}, {k: v[half:] for k, v in c.items()})
        return torch.cat([unet_call(teacher, s[:half], t[:half], first), unet_call(teacher, s[half:], t[half:], second)])

    z_prev = teacher_solve(obj, two_pass_teacher, noisy, d, cond, uncond)
    with torch.no_grad():
        target = consistency_fn(obj, student, z_prev, d.t_end, cond, None)
    return consistency_loss(pred, target, loss_type="huber", huber_c=0.001)


def run_variant(variant: str, workload: str, batch: int, latent: int, steps: int, rank: int, threads: int,
                cache: str | None = None) -> dict:
    import torch

    from lcm_plugin.core import sd_alphas_cumprod
    from lora_training.config import DEFAULT_LORA_TARGETS
    from lora_training.lcd import Objective, lcm_loss
    from lora_training.models import add_lora, clone_frozen
    from lora_training.teachers import adapters_disabled, unet_call

    torch.set_num_threads(threads)
    base_rss = _rss_kb()
    vae, te, tok, unet = build(workload, with_encoders=variant != "ours")
    if variant == "ours":
        # Training from the cache file (written by another process, as `lcm-plugin train cache`): the trainer
        # does not keep the VAE and text encoders (lora_training.models.build_models drops them).
        from safetensors.torch import load_file

        del vae, te
        cached = load_file(cache)
        mean, std = cached["latent_mean"], cached["latent_std"]
        cache_cond = {"encoder_hidden_states": cached["prompt_embeds"]}
        cache_uncond = {"encoder_hidden_states": cached["uncond_embeds"]}
    else:
        pixels, captions = _pixels_and_captions(vae, batch, latent)
        for m in (vae, te):
            m.requires_grad_(False).eval()
    unet.requires_grad_(False).eval()
    teacher = clone_frozen(unet) if variant == "reference" else None  # the reference's separate teacher copy
    add_lora(unet, rank=rank, alpha=rank, target_modules=list(DEFAULT_LORA_TARGETS), dropout=0.0, seed=0)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    obj = Objective(alphas_cumprod=sd_alphas_cumprod(), prediction_type="epsilon", w_min=5.0, w_max=15.0, loss_type="huber")

    def encode_text(texts):
        return _encode_text(tok, te, texts)

    def student(s, t, c, w):
        return unet_call(unet, s, t, c)

    def ours_teacher(s, t, c):
        with adapters_disabled(unet):
            return unet_call(unet, s, t, c)

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(1000 + i)
        if variant == "ours":
            latents = mean + std * torch.randn(mean.shape, generator=gen)
            loss = lcm_loss(obj, student=student, teacher=ours_teacher, target=student, latents=latents,
                            cond=cache_cond, uncond=cache_uncond, generator=gen)
        else:
            with torch.no_grad():  # VAE + text encoder every step, uncond embedding every step (reference script)
                dist = vae.encode(pixels).latent_dist
                latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)) * vae.config.scaling_factor
                cond = {"encoder_hidden_states": encode_text(captions)}
                uncond = {"encoder_hidden_states": encode_text([""] * batch)}
            loss = reference_loss(obj, student, teacher, latents, cond, uncond, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step(0)  # warm-up (allocator, first-call overheads)
    times = []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    return {"variant": variant, "workload": workload, "batch": batch, "latent": latent, "rank": rank, "threads": threads,
            "step_s_median": statistics.median(times), "step_s_all": times, "peak_mib": peak_kb / 1024,
            "trainable_m": sum(p.numel() for p in params) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("toy", "sd15"), default="toy")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--latent", type=int, default=16, help="latent side (pixels = latent * VAE factor)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the variants this many times")
    ap.add_argument("--variant", choices=("ours", "reference", "cache"), help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant == "cache":  # child process
        write_cache(args.workload, args.batch, args.latent, args.cache)
        return
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args.workload, args.batch, args.latent, args.steps, args.rank,
                                     args.threads, args.cache)))
        return
    import tempfile

    cache = str(Path(tempfile.mkdtemp()) / "cache.safetensors")
    common = ["--workload", args.workload, "--batch", str(args.batch), "--latent", str(args.latent)]
    subprocess.run([sys.executable, __file__, "--variant", "cache", "--cache", cache, *common], check=True, capture_output=True)
    results: dict[str, list[dict]] = {"reference": [], "ours": []}
    for _ in range(args.repeats):
        for variant in ("reference", "ours"):
            cmd = [sys.executable, __file__, "--variant", variant, *common, "--steps", str(args.steps), "--rank", str(args.rank),
                   "--threads", str(args.threads), "--cache", cache]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[variant].append(json.loads(out))
            print(out, flush=True)
    ref_t = statistics.median(r["step_s_median"] for r in results["reference"])
    our_t = statistics.median(r["step_s_median"] for r in results["ours"])
    ref_m = statistics.median(r["peak_mib"] for r in results["reference"])
    our_m = statistics.median(r["peak_mib"] for r in results["ours"])
    ref_min = min(min(r["step_s_all"]) for r in results["reference"])
    our_min = min(min(r["step_s_all"]) for r in results["ours"])
    print("\n| workload | batch | latent | reference s/step (median / min) | ours s/step (median / min) | throughput x "
          "(median / min) | reference peak MiB | ours peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.workload} | {args.batch} | {args.latent}x{args.latent} | {ref_t:.3f} / {ref_min:.3f} | {our_t:.3f} / "
          f"{our_min:.3f} | {ref_t / our_t:.2f} / {ref_min / our_min:.2f} | {ref_m:.0f} | {our_m:.0f} | {our_m / ref_m:.2f} |")


if __name__ == "__main__":
    main()
