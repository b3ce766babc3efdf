#!/usr/bin/env bash
# Every GPU measurement of the project in one short run (a lent H100/H200 comes for minutes), in priority
# order, each part under its own time cap so a slow part cannot starve the rest. Logs go to $OUT (or
# /tmp/gpu_checks). Run from the repository root:
#
#     bash benchmarks/gpu_checks.sh            # <= 9.5 minutes on one H100
#
# Its first run (2026-11-26, BENCHMARKS.md) capped part 1 at 230 s, which stopped it after 6 of 10 variants;
# the cap is now 380 s with 5 timed steps per variant; the teacher part runs only if over 150 s are left.
#
# Parts: 1) the LCM-LoRA training step vs the diffusers reference (SD1.5 and SDXL, 512px, batch 8, bf16, with
# and without gradient checkpointing, NF4 base + 8-bit AdamW); 2) the GPU-only trainer tests (bf16, NF4,
# 8-bit Adam); 3) the toy teacher's UNet/text-encoder training continued on the GPU; 4) LCM vs DPM-Solver++
# sampling images/s. Missing Python packages can come as wheels/zips in .whl/ (unpacked to /tmp/site).
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
TOTAL=${GPU_CHECKS_SECONDS:-570}
left() { echo $((TOTAL - SECONDS)); }
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)"
} 2>&1 | tee "$OUT/env.txt"

echo "== 1. training step (cap 380 s; each of the 10 variants takes 30-50 s on an H100, mostly imports and set-up)"
timeout 380 python3 -m benchmarks.gpu_train_step --steps 5 --warmup 2 --out "$OUT/train_step.jsonl" 2>&1 | tee "$OUT/train_step.log"

echo "== 2. GPU trainer tests (cap 45 s)"
timeout 45 python3 -m pytest -q -p no:cacheprovider tests/training/test_gpu_backends.py 2>&1 | tee "$OUT/gpu_tests.log"

echo "== 3. toy teacher on the GPU (left: $(left) s)"
cap=$(( $(left) - 70 ))
if [ "$cap" -gt 150 ]; then
  minutes=$(python3 -c "print(round(($cap - 100) / 60, 2))")
  timeout "$cap" python3 -m lcm_plugin.cli toy train-teacher --resume lcm_plugin/toy/assets/teacher \
    --out /tmp/teacher_gpu --device cuda --n-train 60000 --unet-batch 512 --unet-lr 4e-4 --unet-steps 40000 \
    --max-minutes "$minutes" --decoder-steps 0 --save-every 2000 --seed 5 --threads 4 2>&1 \
    | grep -v "Writing model shards" | tee "$OUT/teacher_gpu.log" | tail -5
  [ -d /tmp/teacher_gpu ] && tar -C /tmp -czf "$OUT/teacher_gpu.tgz" teacher_gpu
fi

echo "== 4. sampling images/s (left: $(left) s)"
if [ "$(left)" -gt 30 ]; then
  timeout "$(left)" python3 -m benchmarks.gpu_engine 2>&1 | tee "$OUT/gpu_engine.log"
fi
echo "== done in $SECONDS s"
