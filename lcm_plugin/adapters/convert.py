"""Lossless conversion of LoRA adapters between diffusers/peft and kohya formats.

Tensors are copied bit for bit; only names change. The LoRA scale alpha/rank travels as kohya ``.alpha``
tensors or, for diffusers files, as peft ``lora_alpha``/``alpha_pattern`` in the ``lora_adapter_metadata``
safetensors metadata (what ``pipe.load_lora_weights`` reads), so a round trip returns identical tensors.

Public API (also used by the LoRA trainer):

- :func:`load_adapter` / :func:`adapter_from_state_dict` -> :class:`LoraAdapter` (canonical names)
- :func:`to_kohya_state_dict`, :func:`to_diffusers_state_dict` -> ``(tensors, metadata)``
- :func:`save_kohya_lora` -- write a peft/diffusers UNet LoRA state dict as a kohya file in one call
- :func:`convert_file` -- file to file, with an optional architecture check before any tensor is loaded
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from lcm_plugin.adapters.formats import ParsedKeys, component_of, parse_keys
from lcm_plugin.adapters.inspection import (
    LORA_ADAPTER_METADATA_KEY,
    adapter_file,
    alpha_from_config,
    check_arch,
    detect_arch,
    diffusers_alpha_metadata,
)
from lcm_plugin.adapters.kohya_names import ARCHS, ArchSpec, diffusers_to_ldm, flatten
from lcm_plugin.adapters.safetensors_io import load_tensors, read_header, save_atomic

logger = logging.getLogger(__name__)

ALPHA_DTYPE_KEY = "lcm_plugin.alpha_dtype"
KOHYA_LAYOUTS = ("auto", "ldm", "diffusers")
# A1111 reads ss_base_model_version to file LoRAs under the right model family.
_SS_BASE = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "ssd1b": "sdxl_base_v1-0"}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class LoraModule:
    """One LoRA pair: ``down`` (kohya lora_down = peft lora_A), ``up`` (lora_up = lora_B), ``alpha``.

    ``alpha`` is the 0-d tensor as stored, or None when the source stores no alpha (scale 1, alpha = rank).
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def alpha_value(self) -> float:
        return float(self.alpha.item()) if self.alpha is not None else float(self.rank)


@dataclass
class LoraAdapter:
    """An adapter under canonical module names (``unet.<diffusers path>``, ``text_encoder.<path>``...)."""

    modules: dict[str, LoraModule]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    source_format: str = "unknown"


def adapter_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    parsed: ParsedKeys | None = None,
) -> LoraAdapter:
    """Build a :class:`LoraAdapter` from any recognised LoRA state dict (see :mod:`formats`).

    Raises:
        ValueError: keys that would be silently dropped (unknown or LyCORIS/DoRA) are present.
    """
    metadata = dict(metadata or {})
    parsed = parsed or parse_keys(list(state_dict))
    if parsed.unsupported:
        raise ValueError(
            f"{len(parsed.unsupported)} keys belong to LyCORIS/DoRA adapters, which are not converted "
            f"(first: {parsed.unsupported[0]}); use a plain LoRA"
        )
    if parsed.unknown:
        raise ValueError(
            f"{len(parsed.unknown)} keys are not LoRA weights of a known module (first: "
            f"{parsed.unknown[0]}); refusing to convert rather than drop them"
        )
    cfg = diffusers_alpha_metadata(metadata)
    alpha_dtype = getattr(torch, metadata.get(ALPHA_DTYPE_KEY, "float32"), torch.float32)
    modules: dict[str, LoraModule] = {}
    for name, keys in parsed.modules.items():
        down, up = state_dict[keys.down], state_dict[keys.up]
        alpha = state_dict[keys.alpha] if keys.alpha is not None else None
        comp, path = name.split(".", 1)
        if alpha is None and comp in cfg:
            alpha = torch.tensor(alpha_from_config(cfg[comp], path, int(down.shape[0])), dtype=alpha_dtype)
        modules[name] = LoraModule(down=down, up=up, alpha=alpha)
    return LoraAdapter(modules=modules, metadata=metadata, source_format=parsed.format)


def load_adapter(path: str | os.PathLike) -> LoraAdapter:
    """Load a safetensors LoRA file (validated first; pickles are refused) as a :class:`LoraAdapter`."""
    tensors, metadata = load_tensors(path)
    return adapter_from_state_dict(tensors, metadata)


def _effective_spec(adapter: LoraAdapter, arch: str) -> ArchSpec:
    """The arch spec, widened by what the adapter itself shows (attention in an up block or the mid block)."""
    spec = ARCHS[arch]
    paths = [n[len("unet.") :] for n in adapter.modules if n.startswith("unet.")]
    up_attn = set(spec.up_blocks_with_attention)
    up_attn.update(int(p.split(".")[1]) for p in paths if p.startswith("up_blocks.") and ".attentions." in p)
    mid = spec.mid_attention or any(p.startswith("mid_block.attentions.") for p in paths)
    return dataclasses.replace(spec, up_blocks_with_attention=tuple(sorted(up_attn)), mid_attention=mid)


def resolve_layout(arch: str, layout: str = "auto") -> str:
    """``auto`` picks the kohya UNet naming that loads with zero skipped keys in the most hosts for ``arch``.

    - SD1.x/2.x: diffusers names (``lora_unet_down_blocks_…``, as kohya sd-scripts writes for SD1.x and as
      the official LCM-LoRA files are): diffusers, ComfyUI and A1111 load all keys. diffusers 0.42 cannot
      load LDM names for SD1.x (its LDM importer misplaces ``output_blocks.2.1.conv``).
    - SDXL: LDM names (``lora_unet_input_blocks_…``, kohya sd-scripts' SDXL naming): all three hosts load
      all keys. A1111 misplaces the first up block's upsampler when given diffusers names.
    - SSD-1B: LDM names: ComfyUI and A1111 load all keys (their SSD-1B checkpoints have no middle attention,
      so diffusers names for the second mid resnet miss); diffusers users should keep the diffusers file.
    """
    if layout not in KOHYA_LAYOUTS:
        raise ValueError(f"unknown kohya layout {layout!r}; choose one of {', '.join(KOHYA_LAYOUTS)}")
    if layout != "auto":
        return layout
    return "diffusers" if arch in ("sd15", "sd2") else "ldm"


def to_kohya_state_dict(
    adapter: LoraAdapter, arch: str, layout: str = "auto"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kohya tensors (``lora_unet_…``/``lora_te…``, ``lora_down``/``lora_up``/``alpha``) and metadata."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    layout = resolve_layout(arch, layout)
    spec = _effective_spec(adapter, arch)
    two_te = len(spec.text_encoders) > 1 or any(component_of(n) == "text_encoder_2" for n in adapter.modules)
    te_prefix = {"text_encoder": "lora_te1_" if two_te else "lora_te_", "text_encoder_2": "lora_te2_"}
    out: dict[str, torch.Tensor] = {}
    alpha_dtypes = Counter()
    for name, mod in adapter.modules.items():
        comp, path = name.split(".", 1)
        if comp == "unet":
            key = "lora_unet_" + flatten(diffusers_to_ldm(path, spec) if layout == "ldm" else path)
        else:
            key = te_prefix[comp] + flatten(path)
        if f"{key}.lora_down.weight" in out:
            raise ValueError(
                f"two modules map to the same kohya name {key}; the adapter has duplicate modules"
            )
        alpha = mod.alpha if mod.alpha is not None else torch.tensor(float(mod.rank))
        alpha_dtypes[str(alpha.dtype)] += 1
        out[f"{key}.lora_down.weight"] = mod.down
        out[f"{key}.lora_up.weight"] = mod.up
        out[f"{key}.alpha"] = alpha
    meta = {
        k: v for k, v in adapter.metadata.items() if k not in (LORA_ADAPTER_METADATA_KEY, ALPHA_DTYPE_KEY)
    }
    meta.update(
        {
            "ss_base_model_version": _SS_BASE[arch],
            "ss_network_module": "networks.lora",
            "lcm_plugin.base_arch": arch,
            "lcm_plugin.kohya_layout": layout,
        }
    )
    if "lcm_plugin.architecture" in meta:  # the trainer's label follows the (checked) target architecture
        meta["lcm_plugin.architecture"] = arch
    return out, meta


def to_diffusers_state_dict(adapter: LoraAdapter) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """diffusers/peft tensors (``unet.<path>.lora_A.weight``…) and metadata carrying every alpha exactly."""
    out: dict[str, torch.Tensor] = {}
    per_comp: dict[str, dict[str, LoraModule]] = {}
    for name, mod in adapter.modules.items():
        out[f"{name}.lora_A.weight"] = mod.down
        out[f"{name}.lora_B.weight"] = mod.up
        comp, path = name.split(".", 1)
        per_comp.setdefault(comp, {})[path] = mod
    config: dict[str, object] = {}
    for comp, mods in per_comp.items():
        r = Counter(m.rank for m in mods.values()).most_common(1)[0][0]
        a = Counter(m.alpha_value for m in mods.values()).most_common(1)[0][0]
        config[f"{comp}.r"] = r
        config[f"{comp}.lora_alpha"] = _num(a)
        config[f"{comp}.target_modules"] = sorted(mods)
        config[f"{comp}.rank_pattern"] = {p: m.rank for p, m in sorted(mods.items()) if m.rank != r}
        config[f"{comp}.alpha_pattern"] = {
            p: _num(m.alpha_value) for p, m in sorted(mods.items()) if m.alpha_value != a
        }
    dtypes = Counter(
        str(m.alpha.dtype).replace("torch.", "") for m in adapter.modules.values() if m.alpha is not None
    )
    meta = {k: v for k, v in adapter.metadata.items() if not k.startswith(("ss_", "modelspec."))}
    meta.update({"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(config, sort_keys=True)})
    if dtypes:
        meta[ALPHA_DTYPE_KEY] = dtypes.most_common(1)[0][0]
    return out, meta


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def save_kohya_lora(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    arch: str,
    lora_alpha: float | None = None,
    alpha_pattern: dict[str, float] | None = None,
    layout: str = "auto",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a LoRA state dict (peft ``get_peft_model_state_dict(unet)``, diffusers or kohya keys) as kohya.

    ``lora_alpha``/``alpha_pattern`` are the peft LoraConfig values; without them alphas stored in the state
    dict are used, and modules with none get alpha = rank (scale 1).
    """
    adapter = adapter_from_state_dict(state_dict, metadata)
    if lora_alpha is not None or alpha_pattern:
        cfg = {"lora_alpha": lora_alpha, "alpha_pattern": alpha_pattern or {}}
        for name, mod in adapter.modules.items():
            value = alpha_from_config(
                {k: v for k, v in cfg.items() if v is not None}, name.split(".", 1)[1], mod.rank
            )
            mod.alpha = torch.tensor(float(value))
    tensors, meta = to_kohya_state_dict(adapter, arch, layout)
    return save_atomic(tensors, path, meta)


@dataclass
class ConvertResult:
    """What :func:`convert_file` did."""

    output: Path
    source_format: str
    target_format: str
    arch: str | None
    layout: str | None
    modules: int


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to: str = "kohya",
    layout: str = "auto",
    arch: str | None = None,
    dtype: str | None = None,
) -> ConvertResult:
    """Convert ``src`` to ``to`` (``kohya`` or ``diffusers``) and write ``dst`` atomically.

    ``arch`` (an ``ARCHS`` key) is checked against the detected base architecture from the header alone,
    before any tensor is loaded. ``dtype`` (fp16/bf16/fp32) casts the up/down weights; None keeps them.
    """
    if to not in ("kohya", "diffusers"):
        raise ValueError(f"unknown target format {to!r}; choose kohya or diffusers")
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError("output path equals input path; choose a different output file")
    header = read_header(adapter_file(src))
    parsed = parse_keys(list(header.tensors))
    guess = detect_arch(parsed, {k: v.shape for k, v in header.tensors.items()}, header.metadata)
    if arch is not None:
        check_arch(guess, arch)
    target_arch = arch or guess.name
    if to == "kohya" and target_arch is None:
        raise ValueError("could not detect the base architecture; pass --for sd15|sd2|sdxl|ssd1b")
    tensors, metadata = load_tensors(src)
    adapter = adapter_from_state_dict(tensors, metadata, parsed)
    if dtype is not None:
        for mod in adapter.modules.values():
            mod.down, mod.up = mod.down.to(_DTYPES[dtype]), mod.up.to(_DTYPES[dtype])
    if to == "kohya":
        out, meta = to_kohya_state_dict(adapter, target_arch, layout)
        used_layout = resolve_layout(target_arch, layout)
    else:
        out, meta = to_diffusers_state_dict(adapter)
        used_layout = "diffusers"
    save_atomic(out, dst, meta)
    logger.info("converted %s (%s) -> %s (%s, %d modules)", src, parsed.format, dst, to, len(adapter.modules))
    return ConvertResult(Path(dst), parsed.format, to, target_arch, used_layout, len(adapter.modules))
