"""Why the toy harness's KID column went negative, and that the prompt-disjoint KID fixes it.

Real test images vs a second, independent rendering of the same scenes (a perfect generator: same distribution,
paired by prompt), and vs real images of other prompts (the validation split: unpaired), at several n. KID as the
harness computed it before (torchmetrics, subset min(50, n), independent draws) and as it does now
(``lcm_plugin.toy.judge.kid``, subsets from disjoint prompts). For one perfect generator the expected KID is 0.

    python benchmarks/toy_kid_pairing.py --sizes 16,64,128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics

import torch


def old_kid(judge, real: torch.Tensor, fake: torch.Tensor, seed: int) -> float:
    """The harness's KID before the fix: torchmetrics' KernelInceptionDistance, subset min(50, n)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from lcm_plugin.toy.judge import JudgeFeatures

    torch.manual_seed(seed)  # torchmetrics draws its subsets from the global RNG
    metric = KernelInceptionDistance(
        feature=JudgeFeatures(judge), normalize=True, subset_size=min(50, len(real))
    )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute()[0])


def main() -> None:
    from lcm_plugin.toy import paths
    from lcm_plugin.toy.evaluate import second_render
    from lcm_plugin.toy.judge import JudgeFeatures, kid, load_judge
    from lcm_plugin.toy.judge_train import real_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,128")
    parser.add_argument("--repeats", type=int, default=5, help="subset-draw seeds per cell (mean and spread)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    judge = load_judge(paths.JUDGE)
    features = JudgeFeatures(judge)
    print(
        "| n | reference set | old KID x1e3 (torchmetrics) | new KID x1e3 (prompt-disjoint) | new KID std x1e3 |"
    )
    print("|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        real, _, _ = real_images("test", n)
        for label, other in (("re-render, same prompts (paired)", second_render("test", n)[0]),
                             ("real, other prompts (val split)", real_images("val", n)[0])):  # fmt: skip
            olds = [old_kid(judge, real, other, s) for s in range(args.repeats)]
            with torch.no_grad():
                fr, fo = features(real), features(other)
            news = [kid(fr, fo, 50, seed=s) for s in range(args.repeats)]
            print(
                f"| {n} | {label} | {1e3 * statistics.mean(olds):.0f} | "
                f"{1e3 * statistics.mean(m for m, _ in news):.0f} | {1e3 * statistics.mean(s for _, s in news):.0f} |"
            )


if __name__ == "__main__":
    main()
