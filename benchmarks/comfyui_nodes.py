"""ComfyUI node-pack benchmarks (issue 12): sampler overhead outside the UNet, and a 100-prompt load on the server.

    python benchmarks/comfyui_nodes.py                     # both, on the random SD1.5-shaped test checkpoint
    python benchmarks/comfyui_nodes.py --only overhead --repeats 30

1. Overhead: ``comfy.sample.sample`` with our ``lcm_exact`` + ``lcm_grid`` vs core's ``lcm`` + ``sgm_uniform`` at the
   same steps, seed and model (64 x 64 px), interleaved; time outside the UNet = total - UNet forward time.
   Medians over the repeats, and the ratio ours / core.
2. Load: a ComfyUI server (CPU) with the shipped txt2img workflow (LCM-LoRA Loader + KSampler lcm_exact/lcm_grid),
   one warm-up prompt, then 100 prompts with distinct seeds queued at once; every one must succeed; server RSS
   after vs before the 100 (the goal: growth < 5 %).
Needs a ComfyUI checkout (LCM_PLUGIN_COMFYUI_PATH or ../shared/comfyui/ComfyUI) and the test requirements.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.comfyui.checkpoints import build_checkpoint  # noqa: E402
from tests.comfyui.comfy_process import run_in_comfyui  # noqa: E402

CHILD = Path(__file__).resolve().parent / "comfyui_overhead_child.py"


def overhead(tmp: Path, steps: str, repeats: int) -> None:
    ckpt = build_checkpoint("sd15", tmp / "ckpts")
    generator = torch.Generator().manual_seed(0)
    tensors = {"cond": torch.randn(1, 77, 768, generator=generator), "uncond": torch.zeros(1, 77, 768)}
    run = run_in_comfyui(CHILD, ckpt.name, steps, str(repeats), models={"checkpoints": [ckpt.path]},
                         tensors=tensors, timeout=3600)  # fmt: skip
    results = run.data["results"]
    print(f"\n### Sampler time outside the UNet (median of {repeats}, ms per run; torch threads "
          f"{run.data['torch_threads']})\n")  # fmt: skip
    print(
        "| steps | core lcm total | core outside UNet | ours total | ours outside UNet | outside ratio ours/core |"
    )
    print("|---|---|---|---|---|---|")
    core, ours = results["core lcm + sgm_uniform"], results["ours lcm_exact + lcm_grid"]
    for s in core:
        row = []
        for r in (core[s], ours[s]):
            total = statistics.median(r["total"]) * 1e3
            outside = statistics.median([t - u for t, u in zip(r["total"], r["unet"], strict=True)]) * 1e3
            row += [total, outside]
        print(f"| {s} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.1f} | {row[3] / row[1]:.2f} |")


def load(tmp: Path, prompts: int) -> None:
    from tests.comfyui_nodes import workflow_env

    with workflow_env.serve(tmp) as (server, _):
        api = workflow_env.for_cpu_api(workflow_env.api_workflow("lcm_lora_txt2img"))
        server.run(api)  # warm-up: model load, LoRA patch
        before = server.rss()
        start = time.perf_counter()
        ids = []
        for seed in range(prompts):
            api["7"]["inputs"]["seed"] = 1000 + seed
            ids.append(server.queue(api))
        outcomes = [server.wait(pid, timeout=1800) for pid in ids]
        seconds = time.perf_counter() - start
        after = server.rss()
    ok = sum(o.status == "success" for o in outcomes)
    print(f"\n### {prompts} prompts through the node pack on the CPU server\n")
    print("| prompts | succeeded | wall s | s / prompt | RSS before MiB | RSS after MiB | growth |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {prompts} | {ok} | {seconds:.1f} | {seconds / prompts:.2f} | {before / 2**20:.0f} | "
          f"{after / 2**20:.0f} | {100 * (after - before) / before:+.1f} % |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["overhead", "load"], default=None)
    parser.add_argument("--steps", default="1,4,8", help="overhead: comma-separated step counts")
    parser.add_argument("--repeats", type=int, default=20, help="overhead: runs per sampler and step count")
    parser.add_argument("--prompts", type=int, default=100, help="load: prompts queued")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lcm_bench_comfy_") as tmp:
        if args.only in (None, "overhead"):
            overhead(Path(tmp), args.steps, args.repeats)
        if args.only in (None, "load"):
            load(Path(tmp), args.prompts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
