"""Known LCM adapters and reference checkpoints, kept as data.

Sizes and sha256 digests are only filled in where public material confirms them (Hugging Face Git LFS
pointers, quoted by several independent projects); everything else is None and shown as "unknown".
Sources, looked up on 2026-11-26:

- lcm-lora-sdv1-5: 134621556 bytes, sha256 8f90d840…afe4 (LFS pointer re-published in
  huggingface.co/cleanmists/my commit 1791fe5; the same pair is pinned by several install scripts).
- lcm-lora-sdxl: 393855224 bytes, sha256 a764e685…9141 (LFS pointer of an identical re-upload,
  huggingface.co/ffxvs/lora-effects-xl commit e393261; pinned with revision a18548dd by other projects).
- lcm-lora-ssd-1b: sha256 7adaaa69…c59b (Git LFS details on huggingface.co/latent-consistency/
  lcm-lora-ssd-1b); 209991222 bytes from the LFS pointer of an identical re-upload (openskyml/lcm-lora-ssd-1b).
- Full LCM checkpoints: file names from the repositories' file listings (sizes shown only rounded there).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

TOY_ADAPTER_DIR = Path(__file__).resolve().parent.parent / "toy" / "assets" / "lcm_lora"


@dataclass(frozen=True)
class KnownAdapter:
    """One registry entry. ``kind`` is ``lora`` (an adapter) or ``checkpoint`` (a full LCM model, reference)."""

    name: str
    repo_id: str | None
    filename: str
    arch: str
    kind: str
    size: int | None = None
    sha256: str | None = None
    revision: str = "main"
    local_path: Path | None = None
    notes: str = ""

    @property
    def url(self) -> str | None:
        """The https download URL on huggingface.co (None for local entries)."""
        if self.repo_id is None:
            return None
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.filename}"


KNOWN_ADAPTERS: tuple[KnownAdapter, ...] = (
    KnownAdapter(
        name="lcm-lora-sd15",
        repo_id="latent-consistency/lcm-lora-sdv1-5",
        filename="pytorch_lora_weights.safetensors",
        arch="sd15",
        kind="lora",
        size=134621556,
        sha256="8f90d840e075ff588a58e22c6586e2ae9a6f7922996ee6649a7f01072333afe4",
        notes="LCM-LoRA for SD1.5 fine-tunes; kohya keys with diffusers module names, 278 modules, rank 64.",
    ),
    KnownAdapter(
        name="lcm-lora-sdxl",
        repo_id="latent-consistency/lcm-lora-sdxl",
        filename="pytorch_lora_weights.safetensors",
        arch="sdxl",
        kind="lora",
        size=393855224,
        sha256="a764e6859b6e04047cd761c08ff0cee96413a8e004c9f07707530cd776b19141",
        notes="LCM-LoRA for SDXL base 1.0 fine-tunes; 788 modules.",
    ),
    KnownAdapter(
        name="lcm-lora-ssd-1b",
        repo_id="latent-consistency/lcm-lora-ssd-1b",
        filename="pytorch_lora_weights.safetensors",
        arch="ssd1b",
        kind="lora",
        size=209991222,
        sha256="7adaaa69db6f011058a19fd1d5315fdf19ef79fcd513cdab30e173833fd5c59b",
        notes="LCM-LoRA for segmind/SSD-1B.",
    ),
    KnownAdapter(
        name="lcm-dreamshaper-v7",
        repo_id="SimianLuo/LCM_Dreamshaper_v7",
        filename="LCM_Dreamshaper_v7_4k.safetensors",
        arch="sd15",
        kind="checkpoint",
        notes="Full LCM (Dreamshaper v7 distilled), single-file checkpoint, about 3.44 GB; reference only.",
    ),
    KnownAdapter(
        name="lcm-sdxl",
        repo_id="latent-consistency/lcm-sdxl",
        filename="diffusion_pytorch_model.fp16.safetensors",
        arch="sdxl",
        kind="checkpoint",
        notes="Full LCM UNet for SDXL (diffusers layout, fp16, about 5.14 GB); reference only.",
    ),
    KnownAdapter(
        name="lcm-ssd-1b",
        repo_id="latent-consistency/lcm-ssd-1b",
        filename="diffusion_pytorch_model.fp16.safetensors",
        arch="ssd1b",
        kind="checkpoint",
        notes="Full LCM UNet for SSD-1B (diffusers layout, fp16, about 2.66 GB); reference only.",
    ),
)


def toy_adapter() -> KnownAdapter:
    """The toy LCM-LoRA shipped in ``lcm_plugin/toy/assets/lcm_lora`` (``local_path`` None if not built)."""
    files = sorted(TOY_ADAPTER_DIR.glob("*.safetensors")) if TOY_ADAPTER_DIR.is_dir() else []
    return KnownAdapter(
        name="lcm-lora-toy",
        repo_id=None,
        filename=files[0].name if files else "(not built)",
        arch="toy",
        kind="lora",
        size=files[0].stat().st_size if files else None,
        local_path=files[0] if files else None,
        notes="Toy-world LCM-LoRA shipped with the package."
        if files
        else f"Not present in this install ({TOY_ADAPTER_DIR} is missing or empty).",
    )


def all_adapters() -> list[KnownAdapter]:
    """Every registry entry, the toy adapter last."""
    return [*KNOWN_ADAPTERS, toy_adapter()]


def every_adapter() -> list[KnownAdapter]:
    """The LCM entries of :func:`all_adapters` and the other few-step adapters (TCD, Hyper-SD, PCM,
    SDXL-Lightning, DMD2: :mod:`lcm_plugin.adapters.few_step_adapters`), the toy adapter last."""
    from lcm_plugin.adapters.few_step_adapters import FEW_STEP_ADAPTERS

    return [*KNOWN_ADAPTERS, *FEW_STEP_ADAPTERS, toy_adapter()]


def find(name: str) -> KnownAdapter:
    """Look an entry of :func:`every_adapter` up by name (or by ``repo_id`` when one entry alone has it).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    entries = every_adapter()
    for entry in entries:
        if name == entry.name:
            return entry
    by_repo = [e for e in entries if e.repo_id is not None and e.repo_id == name]
    if len(by_repo) == 1:
        return by_repo[0]
    close = difflib.get_close_matches(name, [e.name for e in entries], n=3, cutoff=0.6)
    shown = [e.name for e in entries[:6]]
    more = (
        f", ... {len(entries) - len(shown)} more (`lcm-plugin adapters list`)"
        if len(entries) > len(shown)
        else ""
    )
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown adapter {name!r}; known adapters: {', '.join(shown)}{more}{hint} (or pass a https:// URL)"
    )
