#!/usr/bin/env bash
# The toy world's quality work on a lent GPU, in one run of at most ~9.5 minutes (issues #3 and #4):
#   1) continue the shipped toy teacher's UNet + text encoder on the GPU (batch 512, cosine lr to 0);
#   2) score it: DDIM-50 CFG 4 on 128 test prompts (the standard table's size), 512 test prompts and 128
#      validation prompts, plus the adherence split by caption form (benchmarks/toy_binding.py);
#   3) draw 16,000 train images, rebuild the latent/text cache for the new text encoder, distil an LCM-LoRA
#      from scratch with the shipped recipe (lcm_plugin/toy/assets/TRAINING.md) on the GPU;
#   4) score the LoRA at 1/2/4/8 steps against DDIM-1 and DPM-Solver++-8 on 128 and 512 test prompts.
# The teacher and the LoRA come back as $OUT/teacher.tgz and $OUT/lcm_lora.tgz; every log and table is in $OUT.
# Run from the repository root:
#
#     bash benchmarks/gpu_toy_world.sh
#     DEVICE=cpu TEACHER_STEPS=4 UNET_BATCH=8 N_TRAIN=64 WORLD_COUNT=64 LORA_STEPS=2 N_SMALL=8 N_LARGE=16 \
#         OUT=/tmp/smoke bash benchmarks/gpu_toy_world.sh      # CPU smoke test of the whole chain (~3 min)
#
# Settings (environment): TEACHER_MINUTES (time cap of step 1, default 3.5), TEACHER_STEPS (cosine length;
# the H100 ran 13.5 it/s at batch 512 on 2026-11-26, so 3.5 min ~ 2,800 steps), PAIR_FRACTION (share of
# two-object training scenes, default the world's 0.3), LORA_STEPS (3000), N_SMALL / N_LARGE (128 / 512).
# Missing Python packages can come as wheels/zips in .whl/ (unpacked to /tmp/site), as in gpu_checks.sh.
set -u
OUT=${OUT:-/tmp/gpu_toy_world}
DEVICE=${DEVICE:-cuda}
TEACHER_MINUTES=${TEACHER_MINUTES:-3.5}
TEACHER_STEPS=${TEACHER_STEPS:-2700}
UNET_BATCH=${UNET_BATCH:-512}
N_TRAIN=${N_TRAIN:-60000}
PAIR_FRACTION=${PAIR_FRACTION:-0.3}
WORLD_COUNT=${WORLD_COUNT:-16000}
LORA_STEPS=${LORA_STEPS:-3000}
N_SMALL=${N_SMALL:-128}
N_LARGE=${N_LARGE:-512}
THREADS=${THREADS:-4}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
CLI="python3 -m lcm_plugin.cli"
T=$OUT/teacher
{
  date -u
  python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv
} 2>&1 | tee "$OUT/env.txt"
evaluate() {  # evaluate NAME ARGS...: one harness table in $OUT/NAME/toy_eval.md
  local name=$1
  shift
  $CLI toy evaluate --model "$T" --guidance 4 --batch 128 --seed 0 --threads "$THREADS" --device "$DEVICE" \
    --out-dir "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1 || echo "evaluate $name failed (see $OUT/$name.log)"
  grep -h "^| " "$OUT/$name/toy_eval.md" 2>/dev/null | grep -v "^| sampler\|^|---"
}

echo "== 1. teacher continuation on $DEVICE ($TEACHER_STEPS cosine steps, cap $TEACHER_MINUTES min)"
timeout 330 $CLI toy train-teacher --resume lcm_plugin/toy/assets/teacher --out "$T" --device "$DEVICE" \
  --n-train "$N_TRAIN" --unet-batch "$UNET_BATCH" --unet-lr 4e-4 --lr-schedule cosine --warmup 100 \
  --unet-steps "$TEACHER_STEPS" --max-minutes "$TEACHER_MINUTES" --pair-fraction "$PAIR_FRACTION" \
  --decoder-steps 0 --save-every 1000 --seed 7 --threads "$THREADS" 2>&1 | grep -v "Writing model shards" \
  >"$OUT/teacher.log"
grep -E "max_minutes|saved to|unet step [0-9]*0{3} " "$OUT/teacher.log" | tail -4
[ -f "$T/model_index.json" ] || { echo "no teacher written; stopping"; exit 1; }
tar -C "$OUT" -czf "$OUT/teacher.tgz" teacher
echo "   at $SECONDS s"

echo "== 2. teacher scores (DDIM-50, CFG 4)"
evaluate teacher_test_small --samplers ddim --steps 50 --n-samples "$N_SMALL" --split test
evaluate teacher_val_small --samplers ddim --steps 50 --n-samples "$N_SMALL" --split val
evaluate teacher_test_large --samplers ddim --steps 50 --n-samples "$N_LARGE" --split test
python3 benchmarks/toy_binding.py --model "$T" --n "$N_LARGE" --steps 50 --threads "$THREADS" \
  >"$OUT/binding_teacher.md" 2>"$OUT/binding_teacher.log" && tail -5 "$OUT/binding_teacher.md"
echo "   at $SECONDS s"

echo "== 3. cache + LCM-LoRA distillation on $DEVICE ($LORA_STEPS steps)"
$CLI toy make-world --out "$OUT/world" --split train --count "$WORLD_COUNT" >"$OUT/world.log" 2>&1
$CLI train cache --pretrained-model "$T" --train-data-dir "$OUT/world" --resolution 32 --batch-size 256 \
  --output "$OUT/cache.safetensors" >"$OUT/cache.log" 2>&1 || { tail -3 "$OUT/cache.log"; exit 1; }
rm -rf "$OUT/world"
timeout 240 $CLI train lora --pretrained-model "$T" --cache-file "$OUT/cache.safetensors" \
  --output-dir "$OUT/lora_run" --resolution 32 --train-batch-size 32 --max-train-steps "$LORA_STEPS" \
  --learning-rate 1e-3 --lr-scheduler cosine --lr-warmup-steps 20 --omega 4.0 --original-inference-steps 20 \
  --solver ddim --loss-type huber --target student --lora-rank 32 --lora-alpha 32 --checkpointing-steps 1000 \
  --seed 1 >"$OUT/lora.log" 2>&1
tail -4 "$OUT/lora.log"
[ -f "$OUT/lora_run/pytorch_lora_weights.safetensors" ] || { echo "no LoRA written; stopping"; exit 1; }
mkdir -p "$OUT/lcm_lora" && cp "$OUT"/lora_run/{pytorch_lora_weights.safetensors,train_config.json} "$OUT/lcm_lora/"
L=$OUT/lcm_lora/pytorch_lora_weights.safetensors
tar -C "$OUT" -czf "$OUT/lcm_lora.tgz" lcm_lora
rm -rf "$OUT/lora_run" "$OUT/cache.safetensors"
echo "   at $SECONDS s"

echo "== 4. LCM-LoRA scores"
evaluate lora_test_small --samplers ddim,dpm++ --steps 1,8 --lcm-lora "$L" --lcm-steps 1,2,4,8 \
  --n-samples "$N_SMALL" --split test
evaluate lora_test_large --samplers ddim,dpm++ --steps 1,8 --lcm-lora "$L" --lcm-steps 1,2,4 \
  --n-samples "$N_LARGE" --split test
echo "== done in $SECONDS s"
