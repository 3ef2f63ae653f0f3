#!/usr/bin/env bash
# Issue 5's GPU figures in one prepared run, for a session that has a GPU (no session has yet).
#
# Usage: bash bench/gpu_check.sh            # on the GPU machine, after `pip install -e '.[onnx]'`
#        DEVICE=cpu COUNT=8 BATCH=4 JOBS=1:1 REPEAT=1 COMPILE=0 bash bench/gpu_check.sh   # a dry run of the script on a CPU
#
# Writes everything under $OUT (default /tmp/gpu_check) and prints each step's result:
#   1. the machine (nvidia-smi, torch's view of the GPU);
#   2. `animecli bench` rows for the default model and v2: batch 1 fp32 (the upstream-equivalent
#      row is in the same run), batch $BATCH fp16, and batch $BATCH fp16 with --compile;
#      the load/infer/save split, GPU peak MB and PSNR against CPU float32 are columns there;
#   3. end-to-end conversion of $COUNT 512×512 JPEGs with -j $JOBS --batch-size $BATCH, default
#      model and v2 (images/s from the JSON report's summary);
#   4. v2 fp16 on one 1024×1024 image: GPU peak MB (issue 5: ≤ 600 MB).
# Every step runs even if an earlier one failed; the exit code is the number of failed steps.
set -uo pipefail
export COLUMNS=${COLUMNS:-200}  # rich sizes its tables to this when the output is a log file, not a terminal
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_check}
COUNT=${COUNT:-2000}
BATCH=${BATCH:-32}
JOBS=${JOBS:-auto}
REPEAT=${REPEAT:-3}
COMPILE=${COMPILE:-1}  # 0 skips the --compile row (a CPU dry run: compiling there takes many minutes)
FP16=fp16
[ "$DEVICE" = cpu ] && FP16=bf16  # fp16 is CUDA-only; the CPU dry run uses bf16 instead
mkdir -p "$OUT"
failed=0
step() {  # step NAME CMD...: run, log to $OUT/NAME.log, report and return its success
  local name=$1; shift
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then tail -n 25 "$OUT/$name.log"; else
    echo "!! $name failed (exit $?); log: $OUT/$name.log"; tail -n 5 "$OUT/$name.log"; failed=$((failed + 1)); return 1; fi
}

step machine bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null;
  python -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))'; nproc"

# 512×512 JPEGs made from the bundled examples the way `animecli bench` makes its photos
# (centre crop, resize, JPEG), COUNT files with distinct names.
step photos python -c "
import sys
from pathlib import Path
from animecli.benchmark import load_images
out, count = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
data = load_images(None, 512, 100)
for i in range(count):
    (out / f'p{i:05d}.jpg').write_bytes(data[i % len(data)])
print(count, 'JPEGs of 512x512 in', out)
" "$OUT/photos512" "$COUNT"

BENCH=(animecli bench --device "$DEVICE" --model hayao --model v2 --backend eager --images "$OUT/photos512"
       --repeat "$REPEAT" --no-rss --max-images $((2 * BATCH)))  # two full batches per round
step bench_b1_fp32 "${BENCH[@]}" --precision fp32 --batch-size 1 --json "$OUT/bench_b1_fp32.json"
step bench_b${BATCH}_${FP16} "${BENCH[@]}" --no-upstream --precision "$FP16" --batch-size "$BATCH" \
  --json "$OUT/bench_b${BATCH}_${FP16}.json"
[ "$COMPILE" = 1 ] && step bench_b${BATCH}_${FP16}_compile "${BENCH[@]}" --no-upstream --precision "$FP16" --batch-size "$BATCH" --compile \
  --json "$OUT/bench_b${BATCH}_${FP16}_compile.json"

for model in hayao v2; do
  model_args=(--model "$model")
  if [ "$model" = v2 ]; then  # convert takes named models or weight files: v2 gets seeded random weights
    step v2_weights python -c "import torch; from animecli.models.spec import Arch, ArchSpec; from animecli.models.registry import build_generator; \
torch.manual_seed(0); torch.save(build_generator(ArchSpec(Arch.V2)).state_dict(), '$OUT/v2_random.pt')"
    model_args=(--weights "$OUT/v2_random.pt")
  fi
  step "convert_$model" animecli convert "$OUT/photos512" "$OUT/out_$model" "${model_args[@]}" --device "$DEVICE" \
    --precision "$FP16" --batch-size "$BATCH" -j "$JOBS" --overwrite --quiet --report "$OUT/convert_$model.json" &&
    python -c "import json; s = json.load(open('$OUT/convert_$model.json'))['summary']; \
print('$model end to end:', s['converted'], 'images,', s['images_per_s'], 'images/s, peak RSS', s['peak_rss_mb'], 'MB')"
done

step v2_1024_${FP16} animecli bench --device "$DEVICE" --model v2 --backend eager --images "$OUT/photos512" --size 1024 --max-images 2 \
  --precision "$FP16" --batch-size 1 --repeat 1 --no-rss --no-upstream --json "$OUT/v2_1024.json"

echo "== done: $failed step(s) failed; results in $OUT"
exit "$failed"
