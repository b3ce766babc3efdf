"""Recognise LoRA key naming schemes and map every key to one canonical module name.

Canonical module names are diffusers paths with a component prefix: ``unet.down_blocks.1.attentions.0.
transformer_blocks.0.attn1.to_q``, ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``,
``text_encoder_2.…``. Recognised schemes:

- ``kohya``: ``lora_unet_<flat path>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` and
  ``lora_te[12]_…``; UNet paths in the LDM layout (``input_blocks_4_1_…``) or the diffusers layout
  (``down_blocks_1_attentions_0_…``, as in the official LCM-LoRA files).
- ``diffusers``: ``unet.<path>.lora_A.weight`` / ``.lora_B.weight`` (peft naming, what
  ``save_lora_weights`` writes), alphas in the ``lora_adapter_metadata`` safetensors metadata.
- ``diffusers-old``: ``unet.<path>.lora.down.weight`` and ``…attn1.processor.to_q_lora.down.weight``.
- ``peft``: ``base_model.model.<path>.lora_A.weight`` (a raw peft state dict), or bare ``<path>.lora_A.weight``
  as returned by ``get_peft_model_state_dict(unet)``.
- ``comfyui``: ``diffusion_model.<LDM path>.lora_up.weight`` / ``lora_B``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lcm_plugin.adapters.kohya_names import is_ldm_path, ldm_to_diffusers, unflatten

# (suffix, role) pairs, longest first so ".lora_linear_layer.down.weight" wins over ".down.weight".
_SUFFIXES = (
    (".lora_linear_layer.down.weight", "down", "diffusers-old"),
    (".lora_linear_layer.up.weight", "up", "diffusers-old"),
    (".lora_A.default.weight", "down", "peft"),
    (".lora_B.default.weight", "up", "peft"),
    ("_lora.down.weight", "down", "diffusers-old"),
    ("_lora.up.weight", "up", "diffusers-old"),
    (".lora.down.weight", "down", "diffusers-old"),
    (".lora.up.weight", "up", "diffusers-old"),
    (".lora_down.weight", "down", "kohya"),
    (".lora_up.weight", "up", "kohya"),
    (".lora_A.weight", "down", "diffusers"),
    (".lora_B.weight", "up", "diffusers"),
    (".alpha", "alpha", None),
)
# Keys of adapter types we do not convert (LyCORIS LoHa/LoKr, DoRA, LoCon mid weights).
_UNSUPPORTED_MARKERS = (
    ".hada_",
    ".lokr_",
    ".dora_scale",
    ".lora_mid.",
    ".lora_magnitude_vector",
    ".oft_",
    ".w_norm",
)
_DIFFUSERS_UNET_ROOTS = (
    "down_blocks.",
    "mid_block.",
    "up_blocks.",
    "conv_in",
    "conv_out",
    "time_embedding.",
    "add_embedding.",
    "conv_norm_out",
)
_OLD_TE_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


@dataclass
class ModuleKeys:
    """The state-dict keys that hold one LoRA module."""

    down: str | None = None
    up: str | None = None
    alpha: str | None = None


@dataclass
class ParsedKeys:
    """Result of :func:`parse_keys`: canonical module name -> keys, plus what was not understood."""

    format: str
    layout: str | None
    modules: dict[str, ModuleKeys]
    unknown: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


def _canonical(base: str) -> tuple[str, str | None, str | None] | None:
    """Map a key without its LoRA suffix to (canonical name, scheme hint, unet layout) or None."""
    for prefix, comp in (
        ("lora_te1_", "text_encoder"),
        ("lora_te2_", "text_encoder_2"),
        ("lora_te_", "text_encoder"),
    ):
        if base.startswith(prefix):
            return f"{comp}.{unflatten(base[len(prefix) :])}", "kohya", None
    if base.startswith("lora_unet_"):
        path = unflatten(base[len("lora_unet_") :])
        if is_ldm_path(path):
            return f"unet.{ldm_to_diffusers(path)}", "kohya", "ldm"
        return f"unet.{path}", "kohya", "diffusers"
    if base.startswith("diffusion_model."):
        return f"unet.{ldm_to_diffusers(base[len('diffusion_model.') :])}", "comfyui", "ldm"
    hint = None
    if base.startswith("base_model.model."):
        base, hint = base[len("base_model.model.") :], "peft"
        if base.startswith("text_model."):
            base = f"text_encoder.{base}"
        elif not base.startswith(("unet.", "text_encoder.", "text_encoder_2.")):
            base = f"unet.{base}"
    elif base.startswith(_DIFFUSERS_UNET_ROOTS) or is_ldm_path(base):
        base, hint = f"unet.{base}", "peft"
    for comp in ("text_encoder_2", "text_encoder", "unet"):
        if base.startswith(comp + "."):
            path = base[len(comp) + 1 :].replace(".processor.", ".")
            if comp == "unet":
                if is_ldm_path(path):
                    return f"unet.{ldm_to_diffusers(path)}", hint, "ldm"
                if path.endswith(".to_out"):
                    path += ".0"
                return f"unet.{path}", hint, "diffusers"
            head, _, last = path.rpartition(".")
            if last in _OLD_TE_NAMES and head.endswith("self_attn"):
                path = f"{head}.{_OLD_TE_NAMES[last]}"
            return f"{comp}.{path}", hint, None
    return None


def parse_keys(keys: list[str] | tuple[str, ...]) -> ParsedKeys:
    """Group state-dict ``keys`` into LoRA modules under canonical names.

    Raises:
        ValueError: no LoRA key was recognised (e.g. a full checkpoint), or a module lacks its up/down pair.
    """
    modules: dict[str, ModuleKeys] = {}
    schemes: set[str] = set()
    layouts: set[str] = set()
    unknown: list[str] = []
    unsupported: list[str] = []
    for key in keys:
        if any(m in key for m in _UNSUPPORTED_MARKERS):
            unsupported.append(key)
            continue
        match = next(((key[: -len(sfx)], r, sch) for sfx, r, sch in _SUFFIXES if key.endswith(sfx)), None)
        if match is None:
            unknown.append(key)
            continue
        base, role, scheme = match
        try:
            mapped = _canonical(base)
        except ValueError:
            mapped = None
        if mapped is None:
            unknown.append(key)
            continue
        name, hint, layout = mapped
        if layout:
            layouts.add(layout)
        entry = modules.setdefault(name, ModuleKeys())
        if getattr(entry, role) is not None:
            raise ValueError(
                f"two keys map to the same LoRA tensor {name}.{role}: {getattr(entry, role)!r} and {key!r}"
            )
        setattr(entry, role, key)
        if role != "alpha":
            schemes.add(hint or scheme or "kohya")
    if not modules:
        sample = ", ".join(list(keys)[:3])
        raise ValueError(
            "no LoRA weights found (expected lora_down/lora_up, lora_A/lora_B or lora.down/lora.up keys; got "
            f"{sample or 'no keys'}). Is this a full model checkpoint rather than a LoRA adapter?"
        )
    broken = [n for n, m in modules.items() if m.down is None or m.up is None]
    if broken:
        raise ValueError(
            f"{len(broken)} LoRA modules lack a down/up pair (first: {broken[0]}); the file is incomplete"
        )
    fmt = schemes.pop() if len(schemes) == 1 else "mixed(" + ",".join(sorted(schemes)) + ")"
    layout = layouts.pop() if len(layouts) == 1 else ("mixed" if layouts else None)
    return ParsedKeys(format=fmt, layout=layout, modules=modules, unknown=unknown, unsupported=unsupported)


def component_of(name: str) -> str:
    """``unet``, ``text_encoder`` or ``text_encoder_2`` for a canonical module name."""
    return name.split(".", 1)[0]


def target_kind(name: str) -> str:
    """Short module kind used in reports and peft ``target_modules`` (``to_q``, ``ff.net.2``, ``conv1`` ...)."""
    path = name.split(".", 1)[1]
    for tail in ("ff.net.0.proj", "ff.net.2", "to_out.0", "downsamplers.0.conv", "upsamplers.0.conv"):
        if path.endswith(tail):
            return tail
    return path.rsplit(".", 1)[-1]
