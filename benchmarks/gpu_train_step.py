"""GPU per-step throughput and peak memory of our LCM-LoRA step vs the diffusers reference step, at 512x512,
batch 8, on the SD1.5 and SDXL UNet architectures with random weights (compute and memory do not depend on
weight values), in a bf16 mixed-precision run. The default variant set (5 per architecture) is prepared to finish
in about 5 minutes on one H100:

    python -m benchmarks.gpu_train_step                  # both architectures, the default variants
    python -m benchmarks.gpu_train_step --variants reference,ours,reference_gc,ours_gc,ours_nf4_8bit
    python -m benchmarks.gpu_train_step --tiny --device cpu --steps 1 --warmup 1   # smoke test of the code path

Reference = ``benchmarks/reference_step.py`` (the one re-implementation, shared with the CPU benchmark) as the
``--mixed_precision bf16`` run of ``train_lcm_distill_lora_sd{,xl}_wds.py`` does it (``precision="script"``):
the student's base weights stay float32 (neither wds script casts the student; its LoRA is float32 too) and its
forward runs under accelerate's bf16 autocast; a separate float32 teacher (``--cast_teacher_unet`` off, the
default) runs cond then uncond under ``torch.autocast("cuda")``, i.e. **float16**; the target (the student,
no-grad) under bf16 (the prepared student's autocast is innermost); the VAE in fp32 and the text encoder(s) in
bf16 run every step outside autocast; SD's "" embedding is encoded once, SDXL's uncond is zeros.
``reference_equal``: the same step at our precision (base weights of student and teacher in bf16, LoRA fp32,
every pass under the run's bf16 autocast). ``ablate_cache`` / ``ablate_one_unet`` / ``ablate_batched``:
``reference_equal`` plus, cumulatively, the cache (no encoders), one UNet (the student's base with adapters
disabled is the teacher), cond + uncond batched in one teacher forward.
Ours (what ``lora_training.trainer.Trainer`` runs with ``--mixed-precision bf16 --cache-file``): ONE UNet with
bf16 base weights and fp32 LoRA whose base with adapters disabled is the teacher, cond and uncond batched into
ONE teacher forward, target before student, latents and embeddings from the cache (no encoders loaded), the
whole step under bf16 autocast. Same LCM math (lcm_plugin.core via lora_training.lcd), same peft LoRA (rank 64,
the scripts' target modules). ``*_gc`` variants add gradient checkpointing on the student; ``ours_nf4_8bit`` is
ours with the frozen base in NF4 (double quantisation, bf16 compute; ``--nf4-base``) and 8-bit AdamW
(``--use-8bit-adam``), both through bitsandbytes.

Each variant runs in a fresh process; peak memory = torch.cuda.max_memory_allocated over the warm-up and timed
steps (all the variant holds while training: weights, optimizer state, activations; the transient of building
random weights in fp32 and casting them is left out, for every variant alike).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE_VARIANTS = {  # name -> reference_step settings (ablate_*: equal precision, cumulative)
    "reference": dict(precision="script"),
    "reference_equal": dict(precision="equal"),
    "ablate_cache": dict(precision="equal", cache=True),
    "ablate_one_unet": dict(precision="equal", cache=True, one_unet=True),
    "ablate_batched": dict(precision="equal", cache=True, one_unet=True, batched=True),
    "reference_gc": dict(precision="script"),
}
VARIANTS = (*REFERENCE_VARIANTS, "ours", "ours_gc", "ours_nf4_8bit")
DEFAULT_VARIANTS = ("reference", "reference_equal", "ablate_cache", "ablate_one_unet", "ours")


def _configs(arch: str, tiny: bool) -> dict:
    """UNet / VAE / text-encoder configs of the real checkpoints, or small ones of the same shape (``tiny``)."""
    from benchmarks.architectures import SD15_UNET, SDXL_UNET

    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
    )
    clip_l = dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
    )
    clip_g = dict(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        max_position_embeddings=77,
        projection_dim=1280,
        hidden_act="gelu",
    )
    unet = dict(SD15_UNET if arch == "sd15" else SDXL_UNET)
    if tiny:
        vae.update(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)
        clip_l.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        clip_g.update(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=32,
        )
        if arch == "sd15":
            unet.update(
                block_out_channels=(32, 32, 64, 64),
                cross_attention_dim=32,
                attention_head_dim=4,
                norm_num_groups=8,
            )
        else:
            unet.update(
                block_out_channels=(32, 64, 64),
                transformer_layers_per_block=(1, 1, 1),
                attention_head_dim=(2, 4, 4),
                cross_attention_dim=64,
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=32 + 6 * 8,
                norm_num_groups=8,
            )
    return {"unet": unet, "vae": vae, "clip_l": clip_l, "clip_g": clip_g}


def _tokenizer():
    import tempfile

    from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return load_tokenizer(build_tokenizer_files(tmp))


def run_variant(
    arch: str,
    variant: str,
    *,
    batch: int,
    resolution: int,
    steps: int,
    warmup: int,
    rank: int,
    device: str,
    tiny: bool,
) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from benchmarks.reference_step import ReferenceStep, cache_batch, script_batch
    from lcm_plugin.core import sd_alphas_cumprod
    from lora_training.config import DEFAULT_LORA_TARGETS
    from lora_training.lcd import Objective, lcm_loss
    from lora_training.models import add_lora, clone_frozen
    from lora_training.teachers import adapters_disabled, sdxl_unconditional, unet_call

    cuda = device.startswith("cuda")
    bf16 = torch.bfloat16
    cfg = _configs(arch, tiny)
    sdxl = arch == "sdxl"
    latent = resolution // 8
    spec = REFERENCE_VARIANTS.get(variant)  # None: ours
    reference = spec is not None
    from_cache = not reference or spec.get("cache", False)
    script_precision = reference and spec["precision"] == "script"
    torch.manual_seed(0)
    tok = _tokenizer()
    with torch.device(device):  # initialise on the device directly (random weights; minutes saved for SDXL)
        unet = UNet2DConditionModel(**cfg["unet"])
        teacher = clone_frozen(unet) if reference and not spec.get("one_unet") else None  # separate teacher
        if teacher is not None and not script_precision:
            teacher.to(bf16)  # equal precision: the teacher's weights in bf16, as our base UNet
        if not from_cache:
            vae = AutoencoderKL(**cfg["vae"]).requires_grad_(False).eval()  # fp32 VAE ("avoid NaN losses")
            te = (
                CLIPTextModel(
                    CLIPTextConfig(
                        **cfg["clip_l"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
                    )
                )
                .to(bf16)
                .requires_grad_(False)
                .eval()
            )
            te2 = (
                CLIPTextModelWithProjection(
                    CLIPTextConfig(
                        **cfg["clip_g"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
                    )
                )
                .to(bf16)
                .requires_grad_(False)
                .eval()
                if sdxl
                else None
            )
    if (
        variant == "ours_nf4_8bit"
    ):  # QLoRA-style: the frozen base in NF4 with double quantisation (as --nf4-base)
        import tempfile

        from diffusers import BitsAndBytesConfig

        with tempfile.TemporaryDirectory() as tmp:
            unet.to(bf16).save_pretrained(tmp)
            del unet
            torch.cuda.empty_cache()
            qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=bf16)  # fmt: skip
            unet = UNet2DConditionModel.from_pretrained(tmp, quantization_config=qc, torch_dtype=bf16)
    unet.requires_grad_(False).eval()
    add_lora(unet, rank=rank, alpha=rank, target_modules=list(DEFAULT_LORA_TARGETS), dropout=0.0, seed=0)
    if not script_precision:  # ours (lora_training.models.build_models): base weights in the run's dtype ...
        if variant != "ours_nf4_8bit":
            unet.to(bf16)
        for n, p in unet.named_parameters():  # ... and the LoRA weights in fp32
            if "lora_" in n:
                p.data = p.data.float()
    # script precision: the student stays as loaded, base and LoRA in fp32 (the wds scripts do not cast it)
    if variant.endswith("_gc"):
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    if variant == "ours_nf4_8bit":
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4, weight_decay=1e-2)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    obj = Objective(
        alphas_cumprod=sd_alphas_cumprod(),
        prediction_type="epsilon",
        w_min=3.0,
        w_max=15.0,
        num_ddim_timesteps=50,
        loss_type="huber",
    )
    autocast = torch.autocast(device_type="cuda" if cuda else "cpu", dtype=bf16)
    time_ids = torch.tensor(
        [[resolution, resolution, 0, 0, resolution, resolution]] * batch, device=device, dtype=torch.float32
    )
    ids = tok(
        ["a red circle left of a blue square"] * batch,
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)

    def encode(input_ids):
        """Text conditioning as each reference script computes it."""
        if not sdxl:
            return {"encoder_hidden_states": te(input_ids)[0]}
        o1 = te(input_ids, output_hidden_states=True)
        o2 = te2(input_ids, output_hidden_states=True)
        h = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
        return {"encoder_hidden_states": h, "text_embeds": o2.text_embeds, "time_ids": time_ids}

    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1).to(device)
    # the cache file's contents (written once by `lcm-plugin train cache`), on the host like a data batch
    width = cfg["unet"]["cross_attention_dim"]
    cache = {"latent_mean": torch.randn(batch, 4, latent, latent, generator=g),
             "latent_std": torch.rand(batch, 4, latent, latent, generator=g) * 0.1,
             "prompt_embeds": torch.randn(batch, 77, width, generator=g, dtype=torch.float32)}  # fmt: skip
    if sdxl:
        cache.update(
            text_embeds=torch.randn(batch, cfg["clip_g"]["projection_dim"], generator=g),
            time_ids=time_ids.cpu(),
        )
    cache_uncond = torch.randn(1, 77, width, generator=g)

    def cached_cond() -> tuple[dict, dict]:
        cond = {"encoder_hidden_states": cache["prompt_embeds"]}
        if sdxl:
            cond.update(text_embeds=cache["text_embeds"], time_ids=cache["time_ids"])
            return cond, sdxl_unconditional(cond)
        return cond, {"encoder_hidden_states": cache_uncond}

    if reference:
        if from_cache:
            batches = cache_batch(cache["latent_mean"], cache["latent_std"], *cached_cond(), device)
        else:
            with torch.no_grad():  # SD: "" once before the loop; SDXL: zeros shaped like each step's cond
                uncond = None if sdxl else encode(tok([""] * batch, padding="max_length", max_length=77,
                                                      return_tensors="pt").input_ids.to(device))  # fmt: skip
            sd_batch = script_batch(vae, lambda: encode(ids), pixels, uncond)

            def batches(gen):
                latents, cond, unc = sd_batch(gen)
                return latents, cond, (sdxl_unconditional(cond) if sdxl else unc)

        ref = ReferenceStep.build(obj, unet, teacher, batches, precision=spec["precision"],
                                  device_type="cuda" if cuda else "cpu", run_dtype=bf16,
                                  batched=spec.get("batched", False))  # fmt: skip
    else:
        ours_batch = cache_batch(cache["latent_mean"], cache["latent_std"], *cached_cond(), device)

    def student(s, t, c, w):
        return unet_call(unet, s, t, c)

    def ours_teacher(s, t, c):
        with adapters_disabled(unet):
            return unet_call(unet, s, t, c)

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(1000 + i)
        if (
            reference
        ):  # the contexts are inside ReferenceStep (the batch runs outside autocast, as the script)
            loss = ref.loss(gen)
        else:  # Trainer: the whole step under accelerator.autocast(), data from the cache, then lcm_loss
            with autocast:
                latents, cond, unc = ours_batch(gen)
                loss = lcm_loss(obj, student=student, teacher=ours_teacher, target=student, latents=latents, cond=cond,
                                uncond=unc, generator=gen)  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:  # peak while training: weights as held for training, optimizer state, activations (not the
        torch.cuda.empty_cache()  # fp32-construct-then-cast transient of building random weights)
        torch.cuda.reset_peak_memory_stats()
    losses = [step(i) for i in range(warmup)]  # allocator, cuDNN autotuning, first-call overheads
    times = []
    for i in range(warmup, warmup + steps):
        sync()
        t0 = time.perf_counter()
        losses.append(step(i))
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"arch": arch, "variant": variant, "batch": batch, "resolution": resolution, "rank": rank,
            "step_s_median": statistics.median(times), "step_s_all": times, "peak_gib": peak,
            "loss_finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
            "trainable_m": sum(p.numel() for p in params) / 1e6,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="sd15,sdxl")
    ap.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {', '.join(VARIANTS)}"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--tiny", action="store_true", help="small configs of the same architectures (code-path check)"
    )
    ap.add_argument("--out", help="also write the JSON lines here")
    ap.add_argument("--child", nargs=2, metavar=("ARCH", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    kw = dict(
        batch=args.batch,
        resolution=args.resolution,
        steps=args.steps,
        warmup=args.warmup,
        rank=args.rank,
        device=args.device,
        tiny=args.tiny,
    )
    if args.child:
        print(json.dumps(run_variant(*args.child, **kw)))
        return
    print(
        f"# gpu_train_step {time.strftime('%Y-%m-%d %H:%M')} batch {args.batch} {args.resolution}px rank {args.rank}",
        flush=True,
    )
    rows = []
    for arch in args.archs.split(","):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--child", arch, variant, "--batch", str(args.batch), "--resolution",
                   str(args.resolution), "--steps", str(args.steps), "--warmup", str(args.warmup), "--rank",
                   str(args.rank), "--device", args.device] + (["--tiny"] if args.tiny else [])  # fmt: skip
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{arch} {variant} FAILED ({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["wall_s"] = round(time.time() - t0, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(
        "\n| arch | variant | s/step (median) | peak GiB | vs reference: throughput x | memory x "
        "| vs reference_equal: throughput x |"
    )
    print("|---|---|---|---|---|---|---|")
    by = {(r["arch"], r["variant"]): r for r in rows}
    for r in rows:
        ref = by.get((r["arch"], "reference_gc" if r["variant"].endswith("_gc") else "reference"))
        eq = by.get((r["arch"], "reference_equal"))
        tx = f"{ref['step_s_median'] / r['step_s_median']:.2f}" if ref else "-"
        mx = f"{r['peak_gib'] / ref['peak_gib']:.2f}" if ref and ref["peak_gib"] == ref["peak_gib"] else "-"
        ex = (
            f"{eq['step_s_median'] / r['step_s_median']:.2f}"
            if eq and not r["variant"].endswith("_gc")
            else "-"
        )
        print(
            f"| {r['arch']} | {r['variant']} | {r['step_s_median']:.3f} | {r['peak_gib']:.2f} | {tx} | {mx} | {ex} |"
        )


if __name__ == "__main__":
    main()
