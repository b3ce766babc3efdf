"""Run ComfyUI's own LoRA key matching on a LoRA file (a subprocess helper for test_hosts.py).

Usage: python comfy_real_check.py COMFYUI_DIR LORA.safetensors UNET_CONFIG_JSON
Prints JSON: {"not_loaded": [...], "patched": N, "missing_targets": [...]}. ``comfy.model_base`` is stubbed
(it pulls in torchvision and every model family; ``model_lora_keys_unet`` only uses it for isinstance checks).
"""

from __future__ import annotations

import json
import logging
import sys
import types


def main() -> None:
    comfy_dir, lora_path, cfg_json = sys.argv[1:4]
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.utils

    stub = types.ModuleType("comfy.model_base")
    stub.__getattr__ = lambda name: type(name, (), {})
    sys.modules["comfy.model_base"] = stub
    comfy.model_base = stub
    import comfy.lora
    from safetensors.torch import load_file

    cfg = json.loads(cfg_json)
    model_keys = {f"diffusion_model.{v}": None for v in comfy.utils.unet_to_diffusers(cfg).values()}

    class Model:
        model_config = types.SimpleNamespace(unet_config=cfg)

        def state_dict(self):
            return model_keys

    key_map = comfy.lora.model_lora_keys_unet(Model(), {})
    not_loaded: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("lora key not loaded: "):
                not_loaded.append(msg.split(": ", 1)[1])

    logging.getLogger().addHandler(Catch())
    patch = comfy.lora.load_lora(load_file(lora_path), key_map)
    print(
        json.dumps(
            {
                "not_loaded": not_loaded,
                "patched": len(patch),
                "missing_targets": [k for k in patch if k not in model_keys],
            }
        )
    )


if __name__ == "__main__":
    main()
