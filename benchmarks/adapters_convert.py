"""Time ``adapters inspect`` / ``convert`` on a full-size SD1.5 LCM-LoRA-shaped random adapter.

The adapter has the key set and shapes of latent-consistency/lcm-lora-sdv1-5 (278 modules, rank 64, fp16,
kohya keys with diffusers module names, 834 tensors, about 67.5M parameters), generated in memory from the
SD1.5 UNet built on the meta device -- nothing is downloaded.

Usage: python -m benchmarks.adapters_convert [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lora_training.config import DEFAULT_LORA_TARGETS

LCM_TARGETS = DEFAULT_LORA_TARGETS  # the LCM-LoRA target list, kept once in the trainer config


def sd15_lcm_lora_state_dict(rank: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """kohya-format random LoRA with the exact module set and shapes of the SD1.5 LCM-LoRA."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, mod in unet.named_modules():
        if not name.endswith(LCM_TARGETS) or not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(mod, torch.nn.Linear):
            down, up = (rank, mod.in_features), (mod.out_features, rank)
        else:
            down, up = (rank, mod.in_channels, *mod.kernel_size), (mod.out_channels, rank, 1, 1)
        out[f"{key}.lora_down.weight"] = (torch.randn(*down, generator=g) * 0.01).half()
        out[f"{key}.lora_up.weight"] = (torch.randn(*up, generator=g) * 0.01).half()
        out[f"{key}.alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="lcm-adapters-bench-") as tmp:
            run(Path(tmp), args.repeats)
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.workdir, args.repeats)


def run(workdir: Path, repeats: int) -> None:
    """Build the adapter in ``workdir``, time each step ``repeats`` times and print a markdown table."""
    from lcm_plugin.adapters.convert import convert_file, load_adapter
    from lcm_plugin.adapters.download import sha256_file
    from lcm_plugin.adapters.inspection import inspect_file
    from lcm_plugin.adapters.safetensors_io import save_atomic

    t0 = time.perf_counter()
    sd = sd15_lcm_lora_state_dict()
    build_s = time.perf_counter() - t0
    params = sum(v.numel() for k, v in sd.items() if not k.endswith(".alpha"))
    src = save_atomic(sd, workdir / "lcm_lora_sd15_shaped.safetensors")
    del sd

    rows = []
    t, rep = timed(lambda: inspect_file(src), repeats)
    rows.append(("inspect (header + 278 alphas)", t))
    t, _ = timed(lambda: sha256_file(src), repeats)
    rows.append(("sha256 of the file", t))
    dif = workdir / "diffusers.safetensors"
    t, _ = timed(lambda: convert_file(src, dif, to="diffusers"), repeats)
    rows.append(("convert kohya -> diffusers", t))
    ldm = workdir / "kohya_ldm.safetensors"
    t, _ = timed(lambda: convert_file(dif, ldm, to="kohya", layout="ldm", arch="sd15"), repeats)
    rows.append(("convert diffusers -> kohya (LDM names, --for sd15)", t))
    back = workdir / "kohya_back.safetensors"
    t, _ = timed(lambda: convert_file(ldm, back, to="kohya", layout="diffusers"), repeats)
    rows.append(("convert kohya LDM -> kohya diffusers names", t))

    a, b = load_adapter(src), load_adapter(back)
    exact = all(
        torch.equal(a.modules[n].down, b.modules[n].down)
        and torch.equal(a.modules[n].up, b.modules[n].up)
        and a.modules[n].alpha_value == b.modules[n].alpha_value
        for n in a.modules
    )
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} loadavg={os.getloadavg()[0]:.1f}"
    )
    print(
        f"adapter: {rep.modules['unet']} modules, rank {list(rep.ranks)}, {params:,} parameters, "
        f"{src.stat().st_size:,} bytes, arch {rep.arch.name}, built in {build_s:.2f} s"
    )
    print(f"round trip kohya -> diffusers -> kohya(LDM) -> kohya(diffusers) exact: {exact}")
    print(f"| step | median of {repeats} (s) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
