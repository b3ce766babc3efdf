"""Inspect a LoRA adapter file: format, base architecture, rank, alpha, targets -- from the header only.

The base architecture comes from key names and tensor shapes (LCM-LoRA reference, section 9 of our notes):
the cross-attention context dim (``attn2.to_k`` input) is 768 for SD1.x, 1024 for SD2.x and 2048 for
SDXL/SSD-1B; SDXL-family UNets have 3 levels and an ``add_embedding`` (LDM ``label_emb``); SSD-1B is
SDXL-shaped with fewer transformer blocks (4 instead of 10 in the deepest down level, no mid attention).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lcm_plugin.adapters.formats import ParsedKeys, component_of, parse_keys, target_kind
from lcm_plugin.adapters.kohya_names import ARCHS
from lcm_plugin.adapters.safetensors_io import SafetensorsHeader, read_header, tensor_nbytes

logger = logging.getLogger(__name__)

LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # what diffusers' save_lora_weights writes


@dataclass
class ArchGuess:
    """The detected base architecture (a key of ``ARCHS``, or None) and the evidence for it.

    ``declared`` is what the file's own metadata says (None when it says nothing); ``name`` comes from the
    weights' names and shapes, and from ``declared`` only where those cannot tell.
    """

    name: str | None
    reasons: list[str] = field(default_factory=list)
    declared: str | None = None

    @property
    def label(self) -> str:
        return ARCHS[self.name].label if self.name else "unknown"


@dataclass
class InspectReport:
    """Everything ``adapters inspect`` prints."""

    path: str
    file_size: int
    format: str
    layout: str | None
    arch: ArchGuess
    modules: dict[str, int]
    ranks: dict[int, int]
    alphas: dict[float, int]
    targets: dict[str, int]
    parameters: int
    dtypes: dict[str, int]
    metadata: dict[str, str]
    unknown_keys: list[str]
    unsupported_keys: list[str]

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = dict(self.__dict__)
        d["arch"] = {"name": self.arch.name, "label": self.arch.label, "reasons": self.arch.reasons}
        d["ranks"] = {str(k): v for k, v in self.ranks.items()}
        d["alphas"] = {str(k): v for k, v in self.alphas.items()}
        return d


# Metadata keys that name the base model, most specific first: ours (convert, trainer), then the
# Stability/kohya model spec and kohya's sd-scripts key that A1111 reads.
_SDXL_FAMILY = ("sdxl", "ssd1b")


def arch_from_metadata(metadata: dict[str, str]) -> tuple[str | None, str]:
    """The base architecture the safetensors metadata declares (an ``ARCHS`` key or None) and the evidence.

    Read, in this order: ``lcm_plugin.base_arch`` (our converter), ``lcm_plugin.architecture`` (our trainer),
    ``modelspec.architecture`` (e.g. ``stable-diffusion-xl-v1-base/lora``) and kohya's ``ss_base_model_version``
    (``sd_v1``, ``sd_v2``, ``sdxl_base_v1-0``; SSD-1B files carry SDXL's) / ``ss_v2``.
    """
    for key in ("lcm_plugin.base_arch", "lcm_plugin.architecture"):
        value = metadata.get(key, "").strip()
        if value in ARCHS:
            return value, f"metadata {key} = {value}"
    spec = metadata.get("modelspec.architecture", "").lower()
    for prefix, arch in (("ssd-1b", "ssd1b"), ("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v2", "sd2"),
                         ("stable-diffusion-v1", "sd15")):  # fmt: skip
        if spec.startswith(prefix):
            return arch, f"metadata modelspec.architecture = {spec}"
    base = metadata.get("ss_base_model_version", "").lower()
    for prefix, arch in (("sdxl", "sdxl"), ("sd_v2", "sd2"), ("sd_v1", "sd15")):
        if base.startswith(prefix):
            return arch, f"metadata ss_base_model_version = {base}"
    if metadata.get("ss_v2", "").lower() in ("true", "false"):
        arch = "sd2" if metadata["ss_v2"].lower() == "true" else "sd15"
        return arch, f"metadata ss_v2 = {metadata['ss_v2']}"
    return None, ""


def same_base(a: str, b: str, evidence: str = "") -> bool:
    """Whether two ``ARCHS`` keys name the same base; kohya/modelspec metadata cannot tell SSD-1B from SDXL."""
    return a == b or (a in _SDXL_FAMILY and b in _SDXL_FAMILY and "lcm_plugin." not in evidence)


def detect_arch(
    parsed: ParsedKeys, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None
) -> ArchGuess:
    """Guess the base architecture of an adapter from canonical module names and ``down`` tensor shapes, and
    from its ``metadata`` (see :func:`arch_from_metadata`) where the weights cannot tell."""
    guess = _arch_from_weights(parsed, shapes)
    declared, evidence = arch_from_metadata(metadata or {})
    if declared is None:
        return guess
    guess.declared = declared
    if guess.name is None:
        guess.name = declared
        guess.reasons.append(f"{evidence} (the weights' names and shapes do not say)")
    elif same_base(guess.name, declared, evidence):
        guess.reasons.append(f"{evidence} agrees")
    else:
        guess.reasons.append(f"{evidence} disagrees; the weights' shapes decide")
    return guess


def _arch_from_weights(parsed: ParsedKeys, shapes: dict[str, tuple[int, ...]]) -> ArchGuess:
    unet = {n[len("unet.") :]: m for n, m in parsed.modules.items() if n.startswith("unet.")}
    reasons: list[str] = []
    ctx = None
    for path, m in unet.items():
        if re.search(r"\.attn2\.to_[kv]$", path) and m.down in shapes and len(shapes[m.down]) >= 2:
            ctx = shapes[m.down][1]
            reasons.append(f"cross-attention context dim {ctx} ({path})")
            break
    down_levels = {int(x) for x in re.findall(r"(?:^|\n)down_blocks\.(\d+)\.", "\n".join(unet))}
    has_add = any(p.startswith("add_embedding.") for p in unet)
    depth2 = [
        int(t)
        for t in re.findall(
            r"(?:^|\n)down_blocks\.2\.attentions\.\d+\.transformer_blocks\.(\d+)\.", "\n".join(unet)
        )
    ]
    mid_attn = any(p.startswith("mid_block.attentions.") for p in unet)
    mid_res = any(p.startswith("mid_block.resnets.") for p in unet)
    any_attn = any(".attentions." in p for p in unet)

    family = None
    if ctx == 768:
        family = "sd15"
    elif ctx == 1024:
        family = "sd2"
    elif ctx == 2048:
        family = "sdxl"
    elif ctx is not None:
        reasons.append(f"context dim {ctx} matches no Stable Diffusion UNet")
    if has_add:
        reasons.append("has add_embedding (SDXL micro-conditioning)")
        family = family or "sdxl"
    if 3 in down_levels:
        reasons.append("4 UNet levels (down_blocks.3)")
        if family in (None, "sdxl") and ctx is None:
            family = "sd15"
            reasons.append("SD1.x assumed: SD2.x cannot be told apart without attention keys")
    if family == "sdxl":
        # SSD-1B: 4 transformer blocks in down_blocks.2 (SDXL: 10) and no mid attention. An adapter that
        # targets only a few modules cannot show this; it is taken as SDXL and the reason says so.
        n = max(depth2) + 1 if depth2 else 0
        if n:
            reasons.append(f"{n} transformer blocks per attention in down_blocks.2")
        if mid_attn:
            reasons.append("mid block has attention")
        elif 2 <= n <= 4 or (mid_res and any_attn and not n):
            family = "ssd1b"
            if mid_res:
                reasons.append("mid block has resnets but no attention")
        elif n < 5:
            reasons.append("SDXL assumed: too few modules to tell SDXL from SSD-1B")
    if not unet:
        family = _arch_from_text_encoders(parsed, shapes, reasons)
    return ArchGuess(family, reasons)


def _arch_from_text_encoders(
    parsed: ParsedKeys, shapes: dict[str, tuple[int, ...]], reasons: list[str]
) -> str | None:
    has_te2 = any(component_of(n) == "text_encoder_2" for n in parsed.modules)
    for name, m in parsed.modules.items():
        if name.endswith("self_attn.q_proj") and m.down in shapes:
            hidden = shapes[m.down][-1]
            reasons.append(f"text encoder hidden size {hidden} ({name})")
            if has_te2 or hidden == 1280:
                return "sdxl"
            return {768: "sd15", 1024: "sd2"}.get(hidden)
    return None


def check_arch(guess: ArchGuess, wanted: str, what: str = "adapter") -> None:
    """Raise ValueError if ``guess`` contradicts ``wanted`` (an ``ARCHS`` key); accept unknown guesses with a log."""
    if wanted not in ARCHS:
        raise ValueError(f"unknown architecture {wanted!r}; choose one of {', '.join(ARCHS)}")
    if guess.name is None:
        logger.warning("could not tell the base architecture of the %s; trusting --for %s", what, wanted)
        return
    if guess.declared is not None and guess.declared != guess.name and guess.name == wanted:
        logger.warning(
            "the %s's metadata says %s, but its weights are %s shaped; trusting the weights", what, guess.declared,
            wanted,
        )  # fmt: skip
    if guess.name != wanted:
        raise ValueError(
            f"the {what} is for {guess.label} ({guess.name}; {'; '.join(guess.reasons)}), not for "
            f"{ARCHS[wanted].label} ({wanted}); pick the matching adapter or pass --for {guess.name}"
        )


def diffusers_alpha_metadata(metadata: dict[str, str]) -> dict[str, dict]:
    """The per-component LoraConfig kwargs stored by diffusers under ``lora_adapter_metadata`` (may be empty)."""
    raw = metadata.get(LORA_ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable %s metadata", LORA_ADAPTER_METADATA_KEY)
        return {}
    out: dict[str, dict] = {}
    for key, value in data.items():
        comp, _, field_name = key.partition(".")
        if field_name:
            out.setdefault(comp, {})[field_name] = value
    return out


def alpha_from_config(config: dict, path: str, rank: int) -> float:
    """The alpha peft would use for module ``path`` given LoraConfig kwargs (alpha_pattern, then lora_alpha)."""
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            return float(value)
    return float(config.get("lora_alpha", rank))


def adapter_file(path: str | os.PathLike) -> Path:
    """``Path(path)`` when it is a file; a folder or a missing path gets an error that names the file to pass.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without ``.safetensors`` files.
        ValueError: a folder (the message lists its ``.safetensors`` files).
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f.name for f in p.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{p} is a folder with no .safetensors file in it; pass an adapter file.")
        shown = ", ".join(files[:3]) + (f" (and {len(files) - 3} more)" if len(files) > 3 else "")
        raise ValueError(
            f"{p} is a folder, not an adapter file; pass one of its .safetensors files: {shown}."
        )
    if not p.exists():
        raise FileNotFoundError(f"adapter file not found: {p}")
    return p


def inspect_file(path: str | os.PathLike) -> InspectReport:
    """Build an :class:`InspectReport` for a safetensors adapter (reads the header and the scalar alphas)."""
    header: SafetensorsHeader = read_header(adapter_file(path))
    parsed = parse_keys(list(header.tensors))
    shapes = {k: v.shape for k, v in header.tensors.items()}
    guess = detect_arch(parsed, shapes, header.metadata)
    alpha_values = _read_alphas(header, parsed)
    cfg = diffusers_alpha_metadata(header.metadata)
    ranks: Counter = Counter()
    alphas: Counter = Counter()
    for name, m in parsed.modules.items():
        rank = shapes[m.down][0]
        ranks[rank] += 1
        if m.alpha is not None:
            alphas[alpha_values[m.alpha]] += 1
        else:
            comp, path_ = name.split(".", 1)
            alphas[alpha_from_config(cfg.get(comp, {}), path_, rank)] += 1
    params = 0
    for m in parsed.modules.values():
        for key in (m.down, m.up):
            n = 1
            for d in shapes[key]:
                n *= d
            params += n
    return InspectReport(
        path=str(path),
        file_size=header.file_size,
        format=parsed.format,
        layout=parsed.layout,
        arch=guess,
        modules=dict(Counter(component_of(n) for n in parsed.modules)),
        ranks=dict(ranks),
        alphas=dict(alphas),
        targets=dict(Counter(target_kind(n) for n in parsed.modules)),
        parameters=params,
        dtypes=dict(Counter(header.tensors[m.down].dtype for m in parsed.modules.values())),
        metadata=header.metadata,
        unknown_keys=parsed.unknown,
        unsupported_keys=parsed.unsupported,
    )


def _read_alphas(header: SafetensorsHeader, parsed: ParsedKeys) -> dict[str, float]:
    keys = [m.alpha for m in parsed.modules.values() if m.alpha is not None]
    if not keys:
        return {}
    from safetensors import safe_open

    with safe_open(str(header.path), framework="pt") as fh:
        return {k: float(fh.get_tensor(k).float().item()) for k in keys}


def header_bytes(header: SafetensorsHeader) -> int:
    """Sum of tensor bytes according to the header (a sanity check against the file size)."""
    return sum(tensor_nbytes(i) for i in header.tensors.values())


# N, as our trainer and train fuse write it; and its name in files written before 2026-12
ORIGINAL_INFERENCE_STEPS_KEY = "lcm_plugin.original_inference_steps"
OLD_ORIGINAL_INFERENCE_STEPS_KEYS = ("lcm_plugin.num_ddim_timesteps",)


def original_inference_steps_from_metadata(metadata: dict[str, str]) -> tuple[int, str] | None:
    """(N, the key it was read from) from safetensors metadata: ``lcm_plugin.original_inference_steps``, else the
    old ``lcm_plugin.num_ddim_timesteps`` (the shipped toy LCM-LoRA and earlier exports); None when neither holds
    a whole number."""
    for key in (ORIGINAL_INFERENCE_STEPS_KEY, *OLD_ORIGINAL_INFERENCE_STEPS_KEYS):
        value = metadata.get(key, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), key
    return None


def read_original_inference_steps(path: str | os.PathLike) -> int | None:
    """N of the skipping-step grid an LCM-LoRA was distilled on (our trainer writes it to the metadata as
    ``lcm_plugin.original_inference_steps``; older files as ``lcm_plugin.num_ddim_timesteps``), or None when the
    file does not say (public LCM-LoRAs: N = 50).

    Sample with ``original_inference_steps = N`` so the inference timesteps lie on the grid the adapter learnt.
    A folder stands for its ``pytorch_lora_weights.safetensors`` (the trainer's output folder also holds the kohya
    file), else for its single ``.safetensors`` file.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if (p / "pytorch_lora_weights.safetensors").is_file():
            files = [p / "pytorch_lora_weights.safetensors"]
        if len(files) != 1:
            return None
        p = files[0]
    found = original_inference_steps_from_metadata(read_header(p).metadata)
    return None if found is None else found[0]
