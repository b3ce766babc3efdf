"""LCM-LoRA Loader: a LoRA in any format from the ``loras`` folder, or a registry adapter downloaded into it.

The rules (format conversion, architecture check, the all-keys-load check, downloads) live in
``lcm_plugin.adapters.for_comfyui`` and ``lcm_plugin.adapters.lora_sources``; this node feeds them ComfyUI's
objects and applies the result with ``comfy.lora``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from lcm_plugin.adapters import for_comfyui, lora_sources
from lcm_plugin.adapters.recognition import recognise

from .common import CATEGORY, NODE_ID_PREFIX
from .model_patch import with_recipe


def _lora_path(lora_name: str, arch: str | None) -> Path:
    """The file behind a picker value; a ``[download]`` value is installed first, with ComfyUI's progress bar
    (a cancelled prompt stops the download and leaves nothing behind)."""
    choice = lora_sources.parse_choice(lora_name)
    folders = folder_paths.get_folder_paths("loras")
    if choice.kind == "file":
        return lora_sources.find_in_folders(choice.name, folders)
    bar = comfy.utils.ProgressBar(choice.adapter.size or 1)

    def progress(done: int, total: int | None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()  # the UI's Cancel stops a download
        bar.update_absolute(done, total)

    return lora_sources.ensure_adapter(choice.adapter, folders, arch=arch, on_progress=progress)


class LCMPluginLoraLoader(io.ComfyNode):
    """Apply a LoRA whole (every key, or an error): kohya as ComfyUI loads it, diffusers/peft names converted."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_ID_PREFIX}LoraLoader",
            display_name="LCM-LoRA Loader",
            category=CATEGORY,
            description="Loads an LCM-LoRA (or any plain LoRA) in kohya, diffusers or peft format; applies every "
            "key or fails with the reason. '[download] <name>' entries fetch a known LCM-LoRA into the loras "
            "folder (sha256-checked) on first use.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The diffusion model the LoRA is applied to (SD1.x, SD2.x, SDXL, SSD-1B).",
                ),
                io.Clip.Input(
                    "clip",
                    optional=True,
                    tooltip="Optional: the CLIP for LoRAs with text-encoder weights (LCM-LoRAs have none).",
                ),
                io.Combo.Input(
                    "lora_name",
                    options=lora_sources.lora_choices(folder_paths.get_filename_list("loras")),
                    tooltip="A file from the loras folder, or '[download] <name>': a known LCM-LoRA, downloaded "
                    "into the loras folder the first time and reused after.",
                ),
                io.Float.Input(
                    "strength_model",
                    default=1.0,
                    min=-100.0,
                    max=100.0,
                    step=0.01,
                    tooltip="How strongly to modify the diffusion model (1.0 for LCM-LoRAs). Can be negative.",
                ),
                io.Float.Input(
                    "strength_clip",
                    default=1.0,
                    min=-100.0,
                    max=100.0,
                    step=0.01,
                    tooltip="How strongly to modify the CLIP model (unused if the LoRA has no text-encoder weights).",
                ),
                io.Int.Input(
                    "steps",
                    default=0,
                    min=0,
                    max=1000,
                    optional=True,
                    tooltip="Steps for the SIGMAS output (0 = the adapter's own: 4 for LCM-LoRA, its fixed count for "
                    "Hyper-SD / SDXL-Lightning / DMD2 ...). A count the adapter was not made for is reported.",
                ),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    tooltip="img2img strength for the SIGMAS output, on the adapter's own grid (1.0 = text-to-image).",
                ),
            ],
            outputs=[
                io.Model.Output(
                    tooltip="The model with the LoRA applied; it carries the adapter's recipe, so the KSampler's "
                    "lcm_exact + lcm_grid follow it too."
                ),
                io.Clip.Output(tooltip="The CLIP with the LoRA applied (None when no CLIP is connected)."),
                io.Sampler.Output(
                    tooltip="The adapter's sampler (LCM, TCD gamma, or DDIM/Euler-like), for SamplerCustom."
                ),
                io.Sigmas.Output(
                    tooltip="The adapter's timesteps for these steps and denoise, for SamplerCustom."
                ),
                io.Float.Output(
                    display_name="cfg", tooltip="The CFG scale the adapter's authors use (1 = none)."
                ),
                io.String.Output(
                    display_name="recipe", tooltip="Which recipe applies, how it was recognised, warnings."
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name: str, **_) -> tuple:
        """Run again when the file behind ``lora_name`` changes or goes (a deleted download is fetched anew)."""
        try:
            choice = lora_sources.parse_choice(lora_name)
        except ValueError:
            return ("invalid", lora_name)  # execute reports it
        name = choice.name if choice.kind == "file" else lora_sources.installed_name(choice.adapter)
        try:
            found = lora_sources.find_in_folders(name, folder_paths.get_folder_paths("loras"))
        except ValueError:
            found = None
        if found is not None:
            stat = found.stat()
            return (str(found), stat.st_mtime_ns, stat.st_size)
        # Missing now (fingerprints are taken before the prompt runs): never equal to an earlier fingerprint, so
        # a download deleted after a run is fetched again instead of the cached output being reused.
        return ("missing", name, time.monotonic_ns())

    @classmethod
    def execute(
        cls,
        model,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
        steps: int = 0,
        denoise: float = 1.0,
        clip=None,
    ) -> io.NodeOutput:
        new_model, new_clip, path = cls._apply_lora(model, clip, lora_name, strength_model, strength_clip)
        patched, sampler, sigmas, cfg, report = with_recipe(new_model, recognise(path), steps, denoise)
        logging.getLogger(__name__).info("%s", report)
        _show_on_node(report, getattr(cls.hidden, "unique_id", None))
        return io.NodeOutput(patched, new_clip, sampler, sigmas, cfg, report)

    @classmethod
    def _apply_lora(cls, model, clip, lora_name: str, strength_model: float, strength_clip: float):
        """(model, clip) with every key of the LoRA applied, and the LoRA file."""
        if strength_model == 0 and strength_clip == 0:
            return (
                model,
                clip,
                _lora_path(lora_name, for_comfyui.model_arch(type(model.model.model_config).__name__)),
            )
        config = type(model.model.model_config).__name__
        arch = for_comfyui.model_arch(config)
        path = _lora_path(lora_name, arch)
        lora = for_comfyui.load_lora_for_comfyui(path, arch=arch, model_name=config)
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
        if clip is not None:
            key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
            shapes.update((k, tuple(v.shape)) for k, v in clip.cond_stage_model.state_dict().items())
        key_map = for_comfyui.loadable_key_map(key_map, shapes)
        for_comfyui.check_all_keys_load(
            lora.state_dict,
            key_map,
            shapes,
            lora_name=lora_name,
            model_name=f"{config} model",
            clip=clip is not None,
        )
        patches = comfy.lora.load_lora(lora.state_dict, key_map, log_missing=False)
        new_model, new_clip = model.clone(), clip.clone() if clip is not None else None
        applied = set(new_model.add_patches(patches, strength_model))
        if new_clip is not None:
            applied |= set(new_clip.add_patches(patches, strength_clip))
        if applied != set(patches):  # ComfyUI itself confirms every patch found its weight
            raise ValueError(
                f"{len(set(patches) - applied)} weights of {lora_name} found no target; nothing applied"
            )
        return new_model, new_clip, path


def _show_on_node(text: str, node_id: str | None) -> None:
    """The recipe line under the node in the UI (ComfyUI's progress text), when running in the server."""
    server = sys.modules.get("server")  # ComfyUI's server.py, loaded when a server runs this node
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if node_id is not None and instance is not None:
        instance.send_progress_text(text, node_id)


NODES = [LCMPluginLoraLoader]
