"""CPU per-step throughput and peak memory of our LCM-LoRA step vs the diffusers reference step re-implemented
(``benchmarks/reference_step.py``, the one shared with the GPU benchmark), side by side, with ablation rows.

Rows (each in a fresh subprocess, alternated ``--repeats`` times):
- ``reference``: the script's step at its exact precision (``train_lcm_distill_lora_sd_wds.py``, default fp32 run):
  separate fp32 teacher copy, cond and uncond teacher passes and the target under ``torch.autocast("cpu")``
  (bfloat16), student fp32 without autocast, VAE encode + cond text encoder every step, "" encoded once.
- ``reference_equal``: the same step at our precision (no autocast: fp32 everywhere).
- ``ablate_cache`` / ``ablate_one_unet`` / ``ablate_batched``: ``reference_equal`` plus, cumulatively, latents and
  embeddings from the cache (encoders not loaded), the student's base with adapters disabled as the teacher (no
  second UNet), cond + uncond in one teacher forward.
- ``ours``: what ``lora_training.trainer.Trainer`` runs (``lcm_loss``: the above, plus target before student).
All use the same LCM math (lcm_plugin.core via lora_training.lcd) and the same peft LoRA (the script's 14 target
modules). Peak memory = peak RSS (ru_maxrss) minus RSS after imports: everything the variant allocates.

    python benchmarks/train_step.py --workload toy --batch 16 --latent 8 --rank 16 --steps 5 --repeats 2
    python benchmarks/train_step.py --workload toy --precision script --variants reference,ours
    python benchmarks/train_step.py --workload sd15 --batch 1 --latent 32 --steps 3 --variants reference,reference_equal,ours
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
        return (
            toy.build_vae(),
            toy.build_text_encoder(len(tok), tok.bos_token_id, tok.eos_token_id),
            tok,
            toy.build_unet(),
        )
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # Stable Diffusion 1.5 architecture (runwayml/stable-diffusion-v1-5 configs), random weights.
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    if not with_encoders:
        return None, None, tok, unet
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
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
        save_file(
            {
                "latent_mean": (dist.mean * sf).contiguous(),
                "latent_std": (dist.std * sf).contiguous(),
                "prompt_embeds": _encode_text(tok, te, captions).contiguous(),
                "uncond_embeds": _encode_text(tok, te, [""]).expand(batch, -1, -1).contiguous(),
            },
            path,
        )


VARIANTS = {  # name -> ReferenceStep settings (None: ours, lora_training.lcd.lcm_loss as the trainer runs it)
    "reference": dict(precision="script"),
    "reference_equal": dict(precision="equal"),
    "ablate_cache": dict(precision="equal", cache=True),
    "ablate_one_unet": dict(precision="equal", cache=True, one_unet=True),
    "ablate_batched": dict(precision="equal", cache=True, one_unet=True, batched=True),
    "ours": None,
}


def run_variant(
    variant: str,
    workload: str,
    batch: int,
    latent: int,
    steps: int,
    rank: int,
    threads: int,
    cache: str | None = None,
) -> dict:
    """Time ``steps`` optimizer steps (after one warm-up step) of one variant in this process."""
    import torch

    from benchmarks.reference_step import ReferenceStep, cache_batch, script_batch
    from lcm_plugin.core import sd_alphas_cumprod
    from lora_training.config import DEFAULT_LORA_TARGETS
    from lora_training.lcd import Objective, lcm_loss
    from lora_training.models import add_lora, clone_frozen
    from lora_training.teachers import adapters_disabled, unet_call

    spec = VARIANTS[variant]
    cached_data = spec is None or spec.get("cache", False)
    torch.set_num_threads(threads)
    base_rss = _rss_kb()
    vae, te, tok, unet = build(workload, with_encoders=not cached_data)
    if cached_data:
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
    teacher = (
        clone_frozen(unet) if spec is not None and not spec.get("one_unet") else None
    )  # separate teacher
    add_lora(unet, rank=rank, alpha=rank, target_modules=list(DEFAULT_LORA_TARGETS), dropout=0.0, seed=0)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    obj = Objective(
        alphas_cumprod=sd_alphas_cumprod(),
        prediction_type="epsilon",
        w_min=5.0,
        w_max=15.0,
        loss_type="huber",
    )

    if spec is not None:
        if cached_data:
            batches = cache_batch(mean, std, cache_cond, cache_uncond, "cpu")
        else:
            with torch.no_grad():  # the script: "" once before the loop
                uncond = {"encoder_hidden_states": _encode_text(tok, te, [""] * batch)}
            batches = script_batch(
                vae, lambda: {"encoder_hidden_states": _encode_text(tok, te, captions)}, pixels, uncond
            )
        ref = ReferenceStep.build(
            obj,
            unet,
            teacher,
            batches,
            precision=spec["precision"],
            device_type="cpu",
            run_dtype=None,
            batched=spec.get("batched", False),
        )

    def student(s, t, c, w):
        return unet_call(unet, s, t, c)

    def ours_teacher(s, t, c):
        with adapters_disabled(unet):
            return unet_call(unet, s, t, c)

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(1000 + i)
        if spec is None:
            latents = mean + std * torch.randn(mean.shape, generator=gen)
            loss = lcm_loss(
                obj,
                student=student,
                teacher=ours_teacher,
                target=student,
                latents=latents,
                cond=cache_cond,
                uncond=cache_uncond,
                generator=gen,
            )
        else:
            loss = ref.loss(gen)
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
    return {
        "variant": variant,
        "workload": workload,
        "batch": batch,
        "latent": latent,
        "rank": rank,
        "threads": threads,
        "step_s_median": statistics.median(times),
        "step_s_all": times,
        "peak_mib": peak_kb / 1024,
        "trainable_m": sum(p.numel() for p in params) / 1e6,
        "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("toy", "sd15"), default="toy")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--latent", type=int, default=16, help="latent side (pixels = latent x the VAE factor: 4 toy, 8 SD)"
    )
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the variants this many times")
    ap.add_argument(
        "--precision",
        choices=("both", "script", "equal"),
        default="both",
        help="reference rows: the script's exact precision (teacher and target under torch.autocast: "
        "bf16 on a CPU), ours' (equal: fp32), or both",
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma list of {', '.join(VARIANTS)} (ablate_*: equal precision, cumulative)",
    )
    ap.add_argument("--variant", choices=(*VARIANTS, "cache"), help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant == "cache":  # child process
        write_cache(args.workload, args.batch, args.latent, args.cache)
        return
    if args.variant:  # child process
        print(
            json.dumps(
                run_variant(
                    args.variant,
                    args.workload,
                    args.batch,
                    args.latent,
                    args.steps,
                    args.rank,
                    args.threads,
                    args.cache,
                )
            )
        )
        return
    import tempfile

    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    skip = {"script": {"reference_equal"}, "equal": {"reference"}}.get(args.precision, set())
    chosen = [v for v in chosen if v not in skip]
    cache = str(Path(tempfile.mkdtemp()) / "cache.safetensors")
    common = ["--workload", args.workload, "--batch", str(args.batch), "--latent", str(args.latent)]
    subprocess.run(
        [sys.executable, __file__, "--variant", "cache", "--cache", cache, *common],
        check=True,
        capture_output=True,
    )
    print(f"# train_step {time.strftime('%Y-%m-%d %H:%M')} {' '.join(sys.argv[1:])}", flush=True)
    results: dict[str, list[dict]] = {v: [] for v in chosen}
    for _ in range(args.repeats):
        for variant in chosen:
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                *common,
                "--steps",
                str(args.steps),
                "--rank",
                str(args.rank),
                "--threads",
                str(args.threads),
                "--cache",
                cache,
            ]
            out = (
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            results[variant].append(json.loads(out))
            print(out, flush=True)
    med = {v: statistics.median(r["step_s_median"] for r in rs) for v, rs in results.items()}
    low = {v: min(min(r["step_s_all"]) for r in rs) for v, rs in results.items()}
    mem = {v: statistics.median(r["peak_mib"] for r in rs) for v, rs in results.items()}

    def ratio(base: str, v: str) -> str:
        return f"{med[base] / med[v]:.2f} / {low[base] / low[v]:.2f}" if base in med else "-"

    px = args.latent * (4 if args.workload == "toy" else 8)
    print(
        f"\n{args.workload}, batch {args.batch}, latents {args.latent}x{args.latent} ({px} px), rank {args.rank}, "
        f"{args.threads} thread(s), {args.steps} timed steps x {args.repeats}\n"
    )
    print(
        "| variant | s/step (median / min) | peak MiB | throughput vs reference (median / min) | vs reference_equal "
        "| memory vs reference |"
    )
    print("|---|---|---|---|---|---|")
    for v in chosen:
        m = f"{mem[v] / mem['reference']:.2f}" if "reference" in mem else "-"
        print(
            f"| {v} | {med[v]:.3f} / {low[v]:.3f} | {mem[v]:.0f} | {ratio('reference', v)} | {ratio('reference_equal', v)} | {m} |"
        )


if __name__ == "__main__":
    main()
