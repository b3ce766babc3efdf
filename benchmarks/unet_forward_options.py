"""CPU forward time of the full-size SD1.5 UNet (random weights, batch 1, 32x32 latents) under options that
could speed up the training step: eager NCHW vs channels-last memory format (interleaved), or vs torch.compile.

    python benchmarks/unet_forward_options.py --mode channels_last --threads 1
    python benchmarks/unet_forward_options.py --mode compile --threads 2     # ~3.5 min to compile on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.architectures import build_unet, unet_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("channels_last", "compile"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = build_unet("sd15")
    ctx, _ = unet_inputs("sd15", 1, 32, torch.float32)
    x, t = torch.randn(1, 4, 32, 32), torch.tensor([500])

    def timed(model, sample) -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            model(sample, t, encoder_hidden_states=ctx)
            return time.perf_counter() - t0

    timed(unet, x)  # warm-up
    if args.mode == "channels_last":
        eager, other = [], []
        for _ in range(args.repeats):  # interleaved, so CPU contention hits both alike
            unet.to(memory_format=torch.contiguous_format)
            eager.append(timed(unet, x))
            unet.to(memory_format=torch.channels_last)
            other.append(timed(unet, x.to(memory_format=torch.channels_last)))
    else:
        compiled = torch.compile(unet)
        print(f"compile + first call: {timed(compiled, x):.1f} s", flush=True)
        eager = [timed(unet, x) for _ in range(args.repeats)]
        other = [timed(compiled, x) for _ in range(args.repeats)]
    print(f"{args.mode}, {args.threads} thread(s): eager {[round(v, 2) for v in eager]} s, "
          f"{args.mode} {[round(v, 2) for v in other]} s")  # fmt: skip


if __name__ == "__main__":
    main()
