"""Run LoRA-loading cases inside a real ComfyUI, with the lcm-plugin pack loaded as ComfyUI loads custom nodes.

Usage: ``python comfy_child.py SPEC.json`` (run by test_real_comfyui.py in a subprocess; ComfyUI is never
imported into pytest). SPEC: ``{"comfyui", "base", "pack", "out", "cases": [...]}``; each case is
``{"id", "lora_name", "node": "ours"|"stock", "strength_model", "interrupt"}`` (``interrupt``: the UI's
Cancel was pressed before the node ran). The MODEL is a random one-level
SD1.5-shaped UNet (320 channels, 768 context; ComfyUI detects it as SD15), built from ComfyUI's own UNet
class and loaded through ``comfy.sd.load_diffusion_model_state_dict``.

Prints one JSON line: ``object_info`` (the node's /object_info entry) and per case ``ok``, ``error`` (type and message), ``patched`` (weights patched),
``not_loaded`` (ComfyUI's own "lora key not loaded" log lines), ``predicted`` (what
``for_comfyui.comfy_unloaded_keys`` predicts for ComfyUI's full key map) and ``progress`` (ComfyUI progress
bar updates). Patched weights go to ``out/<id>.safetensors``, the unpatched ones to ``out/base.safetensors``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

UNET_CONFIG = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    num_res_blocks=[2],
    channel_mult=[1],
    transformer_depth=[1, 1],
    transformer_depth_output=[1, 1, 1],
    transformer_depth_middle=1,
    num_heads=8,
    num_head_channels=-1,
    context_dim=768,
    use_linear_in_transformer=False,
    adm_in_channels=None,
    use_temporal_attention=False,
    use_spatial_transformer=True,
    legacy=False,
)


def _start_comfyui(spec: dict):
    sys.path.insert(0, spec["comfyui"])
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", spec["base"]]
    import comfy.options

    comfy.options.enable_args_parsing()
    import nodes

    if not asyncio.run(nodes.load_custom_node(spec["pack"])):
        raise SystemExit(f"ComfyUI could not load the pack at {spec['pack']}")
    return nodes


def _random_sd15_model(seed: int = 0):
    import comfy.ops
    import comfy.sd
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**UNET_CONFIG, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    sd = {
        f"model.diffusion_model.{k}": torch.randn(v.shape, generator=g) * 0.05
        for k, v in unet.state_dict().items()
    }
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    assert type(model.model.model_config).__name__ == "SD15", model.model.model_config
    return model


def _patched_weights(model) -> dict:
    import torch

    model.patch_model(device_to=torch.device("cpu"))
    sd = model.model.state_dict()
    out = {k: sd[k].detach().clone().contiguous() for k in model.patches}
    model.unpatch_model()
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    nodes = _start_comfyui(spec)
    import comfy.lora
    import comfy.model_management
    import comfy.utils
    import folder_paths
    from safetensors.torch import save_file

    from lcm_plugin.adapters.for_comfyui import comfy_unloaded_keys
    from lcm_plugin.adapters.safetensors_io import read_header

    not_loaded: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg.startswith("lora key not loaded: "):
                not_loaded.append(msg.split(": ", 1)[1])

    logging.getLogger().addHandler(Catch())
    progress: list[list[int]] = []
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: progress.append([value, total])
    )

    model = _random_sd15_model()
    base = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    loader = nodes.NODE_CLASS_MAPPINGS["LCMPluginLoraLoader"]
    out_dir = Path(spec["out"])
    results, base_keys = [], set()
    for case in spec["cases"]:
        not_loaded.clear()
        progress.clear()
        res = {"id": case["id"], "ok": False}
        comfy.model_management.interrupt_current_processing(case.get("interrupt", False))  # the UI's Cancel
        try:
            if case.get("node", "ours") == "stock":
                patched_model = nodes.LoraLoader().load_lora(
                    model, None, case["lora_name"], case.get("strength_model", 1.0), 0.0
                )[0]
                path = folder_paths.get_full_path_or_raise("loras", case["lora_name"])
                key_map = comfy.lora.model_lora_keys_unet(model.model, {})
                res["predicted"] = sorted(comfy_unloaded_keys(read_header(path).tensors, key_map))
            else:
                output = loader.execute(
                    model=model,
                    lora_name=case["lora_name"],
                    strength_model=case.get("strength_model", 1.0),
                    strength_clip=1.0,
                )
                patched_model = output.result[0]
            weights = _patched_weights(patched_model)
            save_file(weights, str(out_dir / f"{case['id']}.safetensors"))
            base_keys.update(weights)
            res.update(ok=True, patched=len(weights))
        except Exception as err:  # the case's outcome is the report
            res["error"] = f"{type(err).__name__}: {err}"
        res["not_loaded"] = sorted(not_loaded)
        res["progress"] = list(progress)
        results.append(res)
    save_file({k: base[k].contiguous() for k in base_keys}, str(out_dir / "base.safetensors"))
    info = loader.GET_NODE_INFO_V1()  # what /object_info serves for the node
    print(json.dumps({"results": results, "object_info": json.loads(json.dumps(info, default=str))}))


if __name__ == "__main__":
    main()
