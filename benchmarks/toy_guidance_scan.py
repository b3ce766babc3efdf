"""Pick the teacher's CFG scale on *validation* prompts (the table uses test prompts): DDIM, fixed steps.

python benchmarks/toy_guidance_scan.py [--model PATH] [--scales 2,4,7.5] [--steps 25] [--n 64]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from lcm_plugin.toy import paths
    from lcm_plugin.toy.evaluate import _Metrics, generate
    from lcm_plugin.toy.judge import adherence, load_judge
    from lcm_plugin.toy.judge_train import real_images
    from lcm_plugin.toy.models import load_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(paths.TEACHER))
    p.add_argument("--scales", default="2,4,7.5")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge, pipe = load_judge(paths.JUDGE), load_pipeline(args.model)
    real, scenes, prompts = real_images("val", args.n)
    metrics = _Metrics(judge, real, kid_subset=min(50, args.n))
    print("| CFG | FD | KID | adherence all | DDIM steps | n | time (s) |\n|---|---|---|---|---|---|---|")
    for scale in (float(s) for s in args.scales.split(",")):
        t0 = time.perf_counter()
        images = generate(pipe, prompts, args.steps, scale, seed=10_000, batch=args.n)
        fd, kid, _ = metrics(images)
        print(
            f"| {scale:g} | {fd:.2f} | {kid:.4f} | {adherence(judge, images, scenes)['all']:.3f} | {args.steps} | {args.n} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
