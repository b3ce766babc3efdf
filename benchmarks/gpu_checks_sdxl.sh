#!/usr/bin/env bash
# Second, shorter device run (2026-11-26): the parts of gpu_checks.sh that did not fit in its first run there
# (the GPU trainer tests, and the SDXL training-step variants after the SDXL reference), with the SDXL reference
# re-measured on the same machine. Same conventions as gpu_checks.sh.
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=/tmp/site:$PWD
for w in .whl/*; do python3 -m zipfile -e "$w" /tmp/site; done
timeout 45 python3 -m pytest -q -p no:cacheprovider tests/training/test_gpu_backends.py 2>&1 | tee "$OUT/gpu_tests.log"
timeout $((215 - SECONDS)) python3 -m benchmarks.gpu_train_step --archs sdxl --variants reference,ours,ours_gc,ours_nf4_8bit \
  --steps 5 --warmup 2 --out "$OUT/train_step_sdxl.jsonl" 2>&1 | tee "$OUT/train_step_sdxl.log"
echo "== done in $SECONDS s"
