"""The ablation benchmark's plan turns into valid trainer configs that differ from the base in exactly the
ablated field (so a renamed TrainConfig field or a wrong k -> N mapping fails here, not after an hour of CPU)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("diffusers")

from benchmarks import distill_ablation as ab  # noqa: E402
from lora_training.config import TrainConfig  # noqa: E402


def _configs(tmp_path: Path) -> dict[str, tuple[ab.Run, dict]]:
    args = SimpleNamespace(teacher="teacher_dir", cache_file=tmp_path / "cache.safetensors", steps=200)
    return {
        f"{r.table}:{r.setting}": (r, ab.config_for(r, args, tmp_path))
        for r in ab.plan({"omega", "k", "method"})
    }


def test_every_planned_run_is_a_valid_trainer_config(tmp_path, monkeypatch):
    monkeypatch.setattr(TrainConfig, "_is_lcm_folder", lambda self: False)
    runs = _configs(tmp_path)
    assert len(runs) == 12
    for _, cfg in runs.values():
        TrainConfig.from_dict(cfg)  # raises on an unknown or invalid field


def test_each_table_changes_only_its_field(tmp_path):
    runs = _configs(tmp_path)
    omegas = [cfg["omega"] for key, (_, cfg) in runs.items() if key.startswith("omega:")]
    assert omegas == [2.0, 4.0, 8.0, 12.0]
    ks = {key: 1000 // cfg["original_inference_steps"] for key, (_, cfg) in runs.items() if key.startswith("k:")}
    assert ks == {"k:k=1": 1, "k:k=5": 5, "k:k=10": 10, "k:k=20": 20, "k:k=50": 50}
    for key, (_, cfg) in runs.items():
        if key.startswith("k:"):
            assert cfg["omega"] == ab.BASE["omega"]
    # identical settings share one trained run instead of training it three times
    base = runs["omega:omega=4"][1]["output_dir"]
    assert runs["k:k=20"][1]["output_dir"] == base == runs["method:LCM-LoRA"][1]["output_dir"]
    lcd_run, lcd = runs["method:full LCD"]
    assert lcd["method"] == "lcd" and "lora_rank" not in lcd
    lcf_run, lcf = runs["method:LCF from LCM-LoRA"]
    assert lcf["method"] == "lcf" and lcf["init_lora"] == str(Path(base) / "pytorch_lora_weights.safetensors")
    assert "lcm-plugin train lcf" in ab.cli_form(lcf) and "--init-lora" in ab.cli_form(lcf)
