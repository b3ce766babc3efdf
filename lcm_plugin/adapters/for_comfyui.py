"""LoRA files made loadable by ComfyUI's LoRA loader with every key applied (the LCM-LoRA Loader node's logic).

ComfyUI (``comfy/lora.py``, read at a125cd84) loads kohya keys (``lora_unet_…``, ``lora_te…``) but silently
skips peft/diffusers attention keys (``unet.….attn1.to_q.lora_A.weight``; it expects ``….processor.to_q``)
and logs only "lora key not loaded". Here a file is read with safetensors only, checked against the model's
architecture, converted in memory to kohya names when it is not kohya already (lossless: the same tensors,
alphas kept), and checked key by key against ComfyUI's key map so that a LoRA is applied whole or not at all.

Nothing here imports ComfyUI: the node passes in its model's config class name, its LoRA key map and the
shapes of its weights, so every rule is unit-testable without a ComfyUI checkout.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from lcm_plugin.adapters.convert import adapter_from_state_dict, to_kohya_state_dict
from lcm_plugin.adapters.formats import _UNSUPPORTED_MARKERS, parse_keys
from lcm_plugin.adapters.inspection import ArchGuess, detect_arch
from lcm_plugin.adapters.kohya_names import ARCHS
from lcm_plugin.adapters.safetensors_io import load_tensors, read_header

logger = logging.getLogger(__name__)

COMFY_MODEL_ARCHS: dict[str, str] = {
    "SD15": "sd15",
    "SD15_instructpix2pix": "sd15",
    "SD20": "sd2",
    "SD21UnclipL": "sd2",
    "SD21UnclipH": "sd2",
    "SDXL": "sdxl",
    "SDXL_instructpix2pix": "sdxl",
    "SSD1B": "ssd1b",
}
"""ComfyUI model config class (``comfy.supported_models``) -> our architecture name. Exact class names only:
``Segmind_Vega`` and ``KOALA_*`` subclass ``SDXL`` but have other blocks."""

COMFY_NATIVE_FORMATS = ("kohya", "comfyui")
"""Key schemes ComfyUI loads whole by itself; these files are passed through untouched."""

# ComfyUI's plain-LoRA key pairs (comfy/weight_adapter/lora.py, LoRAAdapter.load), in its order of preference.
_COMFY_UP_DOWN = (
    (".lora_up.weight", ".lora_down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    (".lora_B", ".lora_A"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
    (".lora_B.default.weight", ".lora_A.default.weight"),
)
_SHOWN = 3  # key names quoted in an error message
_FLAT_TE_ROOTS = ("encoder.", "embeddings.", "final_layer_norm")


@dataclass
class ComfyLora:
    """A LoRA ready for ``comfy.lora.load_lora``: ``state_dict`` has keys ComfyUI loads, tensors unchanged."""

    state_dict: dict[str, torch.Tensor]
    source_format: str
    converted: bool
    arch: ArchGuess
    modules: int


def model_arch(config_class_name: str) -> str | None:
    """Our architecture name for a ComfyUI model config class name (``type(model.model.model_config)``), or None."""
    return COMFY_MODEL_ARCHS.get(config_class_name)


def check_lora_for_model(guess: ArchGuess, arch: str | None, lora_name: str, model_name: str) -> None:
    """Refuse a LoRA whose detected base architecture is not the model's.

    An unknown model family or an undetectable LoRA is left to :func:`check_all_keys_load`; so is an adapter
    detected as SDXL on an SSD-1B model (an adapter of few modules cannot show the SSD-1B block layout).

    Raises:
        ValueError: the LoRA is for another architecture; the message names both and what to do.
    """
    if arch is None or guess.name is None or guess.name == arch or (guess.name, arch) == ("sdxl", "ssd1b"):
        if guess.name is None:
            logger.info(
                "cannot tell the base architecture of %s; checking its keys against the model", lora_name
            )
        return
    raise ValueError(
        f"{lora_name} is a LoRA for {guess.label} ({'; '.join(guess.reasons)}), but the MODEL is "
        f"{ARCHS[arch].label} ({model_name}); pick a LoRA made for {ARCHS[arch].label}"
    )


def load_lora_for_comfyui(path: str | os.PathLike, *, arch: str | None, model_name: str = "") -> ComfyLora:
    """Read a safetensors LoRA and return it under key names that ComfyUI loads.

    ``arch`` is the model's architecture (:func:`model_arch`; None if unknown). kohya and ComfyUI-named files
    are returned as they are; diffusers/peft/old-diffusers names are converted to kohya in memory.

    Raises:
        ValueError: a pickle, a truncated or corrupt file, not a LoRA, a LyCORIS/DoRA adapter, keys that are
            not LoRA weights, or a LoRA for another architecture.
    """
    name = Path(path).name
    header = read_header(path)
    keys = list(header.tensors)
    unsupported = [k for k in keys if any(marker in k for marker in _UNSUPPORTED_MARKERS)]
    if unsupported:
        raise ValueError(
            f"{name} is a LyCORIS/DoRA adapter ({len(unsupported)} keys such as {unsupported[0]}); this "
            "loader takes plain LoRAs: use ComfyUI's Load LoRA node for it"
        )
    parsed = parse_keys(keys)
    if parsed.unknown:
        raise ValueError(
            f"{name}: {len(parsed.unknown)} keys are not LoRA weights ({_sample(parsed.unknown)}); they would "
            "not be loaded, so the file is refused: use a plain LoRA file"
        )
    guess = detect_arch(parsed, {k: v.shape for k, v in header.tensors.items()}, header.metadata)
    check_lora_for_model(guess, arch, name, model_name or "unknown model")
    try:
        tensors, metadata = load_tensors(path)
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{name} is corrupt ({err}); download or copy it again") from err
    flat_te = [n for n in parsed.modules if _text_model_path(n) != n]
    if parsed.format in COMFY_NATIVE_FORMATS and not flat_te:
        return ComfyLora(tensors, parsed.format, False, guess, len(parsed.modules))
    target = arch or guess.name
    adapter = adapter_from_state_dict(tensors, metadata, parsed)
    if flat_te:
        logger.info(
            "%s: %d text-encoder modules named without text_model. (transformers 5)", name, len(flat_te)
        )
        adapter.modules = {_text_model_path(n): m for n, m in adapter.modules.items()}
    layout = comfy_kohya_layout(target)
    converted, _ = to_kohya_state_dict(adapter, target or "sd15", layout)
    logger.info("%s: %s keys converted to kohya (%s names) for ComfyUI", name, parsed.format, layout)
    return ComfyLora(converted, parsed.format, True, guess, len(parsed.modules))


def comfy_kohya_layout(arch: str | None) -> str:
    """The kohya UNet naming ComfyUI maps right for ``arch``: diffusers paths (``lora_unet_down_blocks_…``),
    which ComfyUI maps through ``unet_to_diffusers`` of the loaded model's own config (any block layout: Vega,
    KOALA, one-level test UNets), except SSD-1B, whose mid block is two resnets that ComfyUI still maps to
    ``middle_block.0``/``.2``: there the LDM names of :mod:`kohya_names` are used."""
    return "ldm" if arch == "ssd1b" else "diffusers"


def _text_model_path(name: str) -> str:
    """``text_encoder.encoder.layers.0…`` -> ``text_encoder.text_model.encoder.layers.0…``.

    transformers 5 dropped CLIPTextModel's ``text_model`` level, so LoRAs saved from it name CLIP modules
    without it; ComfyUI (and kohya) only know the ``text_model.`` names.
    """
    comp, _, path = name.partition(".")
    if comp.startswith("text_encoder") and path.startswith(_FLAT_TE_ROOTS):
        return f"{comp}.text_model.{path}"
    return name


def comfy_unloaded_keys(lora_keys: Iterable[str], key_map_names: Iterable[str]) -> set[str]:
    """The LoRA keys ComfyUI's ``comfy.lora.load_lora`` would not load, given its key map's module names.

    A re-statement of ComfyUI's rule for plain LoRAs: for each module name of the key map, ``<name>.alpha`` and
    the first up/down pair present (kohya ``lora_up``/``lora_down``, peft ``lora_B``/``lora_A``, ...) load;
    every other key is reported by ComfyUI as "lora key not loaded" and skipped.
    """
    keys = set(lora_keys)
    loaded: set[str] = set()
    for name in key_map_names:
        if f"{name}.alpha" in keys:
            loaded.add(f"{name}.alpha")
        for up, down in _COMFY_UP_DOWN:
            if name + up in keys:
                loaded.update((name + up, name + down))
                break
    return keys - loaded


def loadable_key_map(
    key_map: Mapping[str, object], target_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, str]:
    """ComfyUI's key map (LoRA module name -> weight key) cut to weights the model really has."""
    out: dict[str, str] = {}
    for name, target in key_map.items():
        weight = target[0] if isinstance(target, tuple) else target  # some families map (key, slice)
        if isinstance(weight, str) and weight in target_shapes:
            out[name] = weight
    return out


def check_all_keys_load(
    lora: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    target_shapes: Mapping[str, tuple[int, ...]],
    *,
    lora_name: str,
    model_name: str,
    clip: bool,
) -> int:
    """Raise unless ComfyUI would apply every key of ``lora`` (key map from :func:`loadable_key_map`).

    Also checks that each up/down pair fits its weight's shape (ComfyUI logs and skips a misfit at sampling
    time). ``clip`` says whether the key map includes a CLIP's keys. Returns the number of weights patched.

    Raises:
        ValueError: keys would be skipped or do not fit; the message gives the count, a few names, the fix.
    """
    unloaded = comfy_unloaded_keys(lora, key_map)
    if unloaded:
        te = sorted(k for k in unloaded if k.startswith(("lora_te", "text_encoder")))
        hint = (
            " It has text-encoder weights: connect the CLIP input."
            if te and not clip
            else " The LoRA does not match this model: pick one made for it."
        )
        raise ValueError(
            f"{len(unloaded)} of {len(lora)} keys of {lora_name} would not be loaded into this {model_name} "
            f"(e.g. {_sample(te if te and not clip else unloaded)}); ComfyUI would silently apply "
            f"part of the LoRA, so nothing was applied.{hint}"
        )
    misfits: list[str] = []
    patched = 0
    for name, weight in key_map.items():
        pair = next(((name + u, name + d) for u, d in _COMFY_UP_DOWN if name + u in lora), None)
        if pair is None:
            continue
        patched += 1
        up, down, shape = lora[pair[0]].shape, lora[pair[1]].shape, tuple(target_shapes[weight])
        if up[0] != shape[0] or math.prod(up[1:]) != down[0] or math.prod(down[1:]) != math.prod(shape[1:]):
            misfits.append(f"{pair[0]} {tuple(up)}x{tuple(down)} vs {weight} {shape}")
    if misfits:
        raise ValueError(
            f"{len(misfits)} LoRA modules of {lora_name} do not fit the weights of this {model_name} "
            f"(e.g. {_sample(misfits)}); the LoRA is for another model: pick one made for it"
        )
    return patched


def _sample(items: Iterable[str]) -> str:
    items = sorted(items)
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
