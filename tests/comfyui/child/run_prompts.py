"""Inside ComfyUI: run API-format prompts with ComfyUI's own validation and executor (``comfy_process.run_workflows``).

Usage (by the parent): python run_prompts.py PROMPTS.json [--fresh]
PROMPTS.json is a list of API-format prompts; ``--fresh`` empties ComfyUI's execution cache before each prompt
(otherwise nodes whose inputs did not change come from the cache, as in a running ComfyUI). Writes one result dict per prompt (see ``ChildContext.run_prompt``)
plus the captured tensors: every file that the harness capture node wrote for prompt i comes back as ``"i/<name>"``.
"""

from __future__ import annotations

import json
import os

from comfy_child import boot, write_result


def main() -> None:
    ctx = boot()
    with open(ctx.args[0], encoding="utf-8") as f:
        prompts = json.load(f)
    from safetensors.torch import load_file

    capture_dir = os.environ["LCM_HARNESS_CAPTURE_DIR"]
    results, tensors = [], {}
    for index, prompt in enumerate(prompts):
        for name in os.listdir(capture_dir):
            os.remove(os.path.join(capture_dir, name))
        if "--fresh" in ctx.args[1:]:
            ctx._executor().reset()
        results.append(ctx.run_prompt(prompt))
        for name in sorted(os.listdir(capture_dir)):
            if name.endswith(".safetensors"):
                for key, t in load_file(os.path.join(capture_dir, name)).items():
                    tensors[f"{index}/{key}"] = t
    write_result({"results": results, "warnings": ctx.log_records}, tensors)


if __name__ == "__main__":
    main()
