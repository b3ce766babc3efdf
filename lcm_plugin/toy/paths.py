"""Where the shipped toy assets live (no heavy imports)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
TEACHER = ASSETS / "teacher"
JUDGE = ASSETS / "judge" / "judge.safetensors"
LCM_LORA = ASSETS / "lcm_lora"
