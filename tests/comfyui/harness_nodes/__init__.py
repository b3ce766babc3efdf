"""A test-only ComfyUI node pack: tensors in and out of a graph, so tests can compare ComfyUI with diffusers.

``comfy_process`` and ``server`` link this folder into ``TMP/custom_nodes`` next to the repository (only when a
test asks for it); it is never part of the lcm-plugin node pack. Classic (V1) nodes, category "testing/harness":

- ``HarnessConditioning``: CONDITIONING from the tensor file the parent wrote (``[[cond, {"pooled_output": p}]]``).
- ``HarnessLatent``: LATENT ``{"samples": t}`` (ComfyUI's LATENT units, i.e. diffusers latents / scaling factor).
- ``HarnessCaptureLatent`` (output node): writes ``samples`` into the capture folder as ``<name>.safetensors``.

Folders come from the environment the harness sets: ``LCM_HARNESS_TENSORS`` (a .safetensors file) and
``LCM_HARNESS_CAPTURE_DIR``; names are plain keys, so a workflow never carries a path.
"""

from __future__ import annotations

import os
import re

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _tensor(name: str):
    from safetensors import safe_open

    path = os.environ.get("LCM_HARNESS_TENSORS")
    if not path or not os.path.isfile(path):
        raise ValueError("no harness tensor file: pass tensors=... to run_workflows / the server fixture")
    with safe_open(path, framework="pt") as f:
        if name not in f.keys():
            raise ValueError(f"harness tensor {name!r} not found; have {sorted(f.keys())}")
        return f.get_tensor(name)


class HarnessConditioning:
    CATEGORY = "testing/harness"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "load"
    DESCRIPTION = "Test harness: CONDITIONING from a tensor the test passed."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": ("STRING", {"default": "cond", "tooltip": "tensor key (context, [B, 77, C])"})
            },
            "optional": {
                "pooled": ("STRING", {"default": "", "tooltip": "tensor key of pooled_output, or empty"})
            },
        }

    def load(self, name, pooled=""):
        extra = {"pooled_output": _tensor(pooled).float()} if pooled else {}
        return ([[_tensor(name).float(), extra]],)


class HarnessLatent:
    CATEGORY = "testing/harness"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"
    DESCRIPTION = "Test harness: LATENT from a tensor the test passed (ComfyUI latent units)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"name": ("STRING", {"default": "latent", "tooltip": "tensor key, [B, 4, H, W]"})}
        }

    def load(self, name):
        return ({"samples": _tensor(name).float()},)


class HarnessCaptureLatent:
    CATEGORY = "testing/harness"
    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    DESCRIPTION = "Test harness: hand a LATENT back to the test."

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # NaN never equals itself: ComfyUI re-runs this node in every prompt, even when its input comes from the
        # cache, so a test always gets the latent back.
        return float("nan")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "the latent to hand back"}),
                "name": ("STRING", {"default": "latent", "tooltip": "key under which the test gets it"}),
            }
        }

    def capture(self, samples, name):
        from safetensors.torch import save_file

        if not _NAME.match(name):
            raise ValueError(f"capture name {name!r}: use letters, digits, '_', '-', '.' only")
        folder = os.environ.get("LCM_HARNESS_CAPTURE_DIR")
        if not folder:
            raise ValueError(
                "LCM_HARNESS_CAPTURE_DIR is not set; HarnessCaptureLatent runs only under the harness"
            )
        path = os.path.join(folder, f"{name}.safetensors")
        save_file({name: samples["samples"].detach().float().cpu().contiguous()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        return {"ui": {"harness_capture": [name]}}


NODE_CLASS_MAPPINGS = {
    "HarnessConditioning": HarnessConditioning,
    "HarnessLatent": HarnessLatent,
    "HarnessCaptureLatent": HarnessCaptureLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {k: f"Test harness: {k.removeprefix('Harness')}" for k in NODE_CLASS_MAPPINGS}
