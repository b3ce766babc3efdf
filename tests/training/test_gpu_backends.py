"""The GPU-only training options: bf16 mixed precision, 8-bit AdamW and the NF4 (QLoRA-style) frozen base.

These need a CUDA GPU (and bitsandbytes for the last two) and skip without them; on CPU the clear errors for
the missing backends are tested in test_bad_input.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lora_training.trainer import Trainer
from tests.training.helpers import base_config

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)"
)
needs_bnb = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available(),
    reason="needs bitsandbytes and a CUDA GPU",
)


def _lora_snapshot(trainer):
    return {n: p.detach().float().cpu().clone() for n, p in trainer.models.trainable}


@needs_cuda
def test_bf16_training_on_gpu_keeps_lora_fp32_and_learns(tmp_path, pipe_dir, data_dir):
    trainer = Trainer(base_config(tmp_path, pipe_dir, data_dir, mixed_precision="bf16", max_train_steps=4))
    assert all(p.is_cuda and p.dtype == torch.float32 for _, p in trainer.models.trainable)
    base = [p for n, p in trainer.models.student.named_parameters() if "lora_" not in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)
    before = _lora_snapshot(trainer)
    result = trainer.train()
    after = _lora_snapshot(trainer)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()


@needs_bnb
def test_nf4_base_and_8bit_adam_train_and_export(tmp_path, pipe_dir, data_dir):
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    cfg = base_config(tmp_path, pipe_dir, data_dir, mixed_precision="bf16", nf4_base=True, use_8bit_adam=True,
                      max_train_steps=4)  # fmt: skip
    trainer = Trainer(cfg)
    quantised = [m for m in trainer.models.student.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantised, "the frozen base should hold NF4 Linear4bit layers"
    assert all(m.weight.quant_state.nested for m in quantised), "double quantisation should be on"
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer,
                      bnb.optim.AdamW8bit)  # fmt: skip
    before = _lora_snapshot(trainer)
    result = trainer.train()
    after = _lora_snapshot(trainer)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert any(not torch.equal(before[n], after[n]) for n in before)
    exported = load_file(str(tmp_path / "out" / "pytorch_lora_weights.safetensors"))
    assert exported and all(torch.isfinite(v).all() for v in exported.values())
