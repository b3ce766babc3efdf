"""Inside ComfyUI: load checkpoints with comfy.sd.load_checkpoint_guess_config and run their raw UNet.

Usage (by the parent): python load_checkpoints.py NAME [NAME ...]
Each NAME is a file in models/checkpoints. Input tensors ``NAME/x``, ``NAME/t``, ``NAME/context`` and optionally
``NAME/y`` (SDXL's ADM vector) feed ``diffusion_model(x, timesteps=t, context=context, y=y)``; the output comes back
as ``NAME/out``. The JSON says what ComfyUI detected and which UNet keys were missing or unexpected.
"""

from __future__ import annotations

from comfy_child import boot, write_result


def main() -> None:
    ctx = boot(load_nodes="none")
    import comfy.sd
    import folder_paths
    import torch
    from safetensors import safe_open

    inputs = ctx.input_tensors()
    report, outputs = {}, {}
    for name in ctx.args:
        path = folder_paths.get_full_path_or_raise("checkpoints", name)
        with safe_open(path, framework="pt") as f:
            prefix = "model.diffusion_model."
            file_unet_keys = {k[len(prefix) :] for k in f.keys() if k.startswith(prefix)}
        first_log = len(ctx.log_records)
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            path,
            output_vae=True,
            output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
        )
        base = model.model
        unet = base.diffusion_model
        model_keys = set(unet.state_dict())
        report[name] = {
            "model_config": type(base.model_config).__name__,
            "model_base": type(base).__name__,
            "model_type": base.model_type.name,
            "latent_format": type(base.latent_format).__name__,
            "scale_factor": float(base.latent_format.scale_factor),
            "unet_dtype": str(base.get_dtype()),
            "unet_config": {
                k: v for k, v in base.model_config.unet_config.items() if isinstance(v, (int, list, str))
            },
            "missing_unet_keys": sorted(model_keys - file_unet_keys),
            "unexpected_unet_keys": sorted(file_unet_keys - model_keys),
            "clip": None if clip is None else type(clip.cond_stage_model).__name__,
            "vae": None if vae is None else type(vae.first_stage_model).__name__,
            "log": ctx.log_records[first_log:],
        }
        if f"{name}/x" in inputs:
            kwargs = {"timesteps": inputs[f"{name}/t"], "context": inputs[f"{name}/context"]}
            if f"{name}/y" in inputs:
                kwargs["y"] = inputs[f"{name}/y"]
            with torch.no_grad():
                outputs[f"{name}/out"] = unet(inputs[f"{name}/x"], **kwargs).float()
    write_result(report, outputs)


if __name__ == "__main__":
    main()
