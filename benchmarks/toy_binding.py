"""Where a toy model's prompt-adherence misses are: all-attribute adherence by caption form.

    python benchmarks/toy_binding.py --model lcm_plugin/toy/assets/teacher [--lcm-lora PATH --lcm-steps 4]
        [--split test] [--n 512] [--steps 50] [--guidance 4] [--seed 0] [--threads 1]

Caption forms: one object; two objects named in scene order ("a red circle left of a blue square": the first
named object is the left/upper one); two objects named in reverse ("a blue square right of a red circle": the
first named object is the right/lower one, so binding needs the relation word that comes after it).
Same prompts, seeds and judge as ``lcm-plugin toy evaluate`` (sample i starts from seed SEED+i).
"""

from __future__ import annotations

import argparse
import sys
import time


def caption_form(caption: str, scene) -> str:
    if scene.n_objects == 1:
        return "one object"
    # Pair captions start with "a <colour> <shape> ": the left/upper object (scene order) or the other one.
    return (
        "pair, scene order" if caption.startswith(f"a {scene.colour1} {scene.shape1} ") else "pair, reversed"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument(
        "--lcm-lora", default=None, help="score this LCM-LoRA (LCM scheduler, CFG 1) instead of DDIM"
    )
    p.add_argument("--lcm-steps", type=int, default=4)
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch
    from diffusers import DDIMScheduler

    from lcm_plugin.toy import paths
    from lcm_plugin.toy.evaluate import generate, lcm_sampler
    from lcm_plugin.toy.judge import all_attributes_right, labels_tensor, load_judge, predict
    from lcm_plugin.toy.judge_train import real_images
    from lcm_plugin.toy.models import load_pipeline

    torch.set_num_threads(args.threads)
    judge = load_judge(paths.JUDGE)
    pipe = load_pipeline(args.model)
    _, scenes, prompts = real_images(args.split, args.n)
    if args.lcm_lora:
        sampler = lcm_sampler(args.lcm_lora, [args.lcm_steps], 1.0)
        pipe.load_lora_weights(args.lcm_lora, adapter_name="eval_lora")
        pipe.scheduler = sampler.scheduler_factory(pipe.scheduler.config)
        steps, guidance, label = args.lcm_steps, 1.0, f"LCM-LoRA {args.lcm_steps} steps"
    else:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        steps, guidance, label = args.steps, args.guidance, f"DDIM {args.steps} steps, CFG {args.guidance:g}"
    t0 = time.perf_counter()
    images = generate(pipe, prompts, steps, guidance, args.seed, args.batch)
    pred, truth = predict(judge, images), labels_tensor(scenes)
    ok = all_attributes_right(pred, truth)
    forms = [caption_form(c, s) for c, s in zip(prompts, scenes, strict=True)]
    print(
        f"{args.model}: {label}; {args.split} prompts 0..{args.n - 1}, seeds {args.seed}.. "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print(
        "| caption form | prompts | all-attribute adherence | first-named object right | second-named right |"
    )
    print("|---|---|---|---|---|")
    for form in ("one object", "pair, scene order", "pair, reversed", "all"):
        idx = [i for i, f in enumerate(forms) if form in (f, "all")]
        if not idx:
            continue
        acc = float(ok[idx].float().mean())
        first = second = "-"
        if form.startswith("pair"):
            # object 1 = the left/upper one; in reversed captions it is named second.
            sel = torch.tensor(idx)
            o1, o2 = (
                (pred[f"shape{k}"][sel] == truth[f"shape{k}"][sel])
                & (pred[f"colour{k}"][sel] == truth[f"colour{k}"][sel])
                for k in (1, 2)
            )
            named_first, named_second = (o1, o2) if form == "pair, scene order" else (o2, o1)
            first, second = f"{named_first.float().mean():.3f}", f"{named_second.float().mean():.3f}"
        print(f"| {form} | {len(idx)} | {acc:.3f} | {first} | {second} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
