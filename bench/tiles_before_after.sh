#!/bin/bash
# A tiled convert of one 1536×1024 photo (the first val photo scaled up) with the default model,
# an older tree against this one, alternating, each with its own ANIMECLI_HOME (graph cache):
#   git archive 8c48918 | tar -x -C /tmp/before      # e.g. before AnimeGANv3's tiles ran in onnxruntime
#   THREADS=2 bash bench/tiles_before_after.sh /tmp/before
# Prints wall time and peak RSS per run, the report's infer ms and notes, and the PSNR between the trees.
set -u
old=$1; new=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); mkdir -p "$work/in"
python - "$new/../shared/photos/val" "$work/in/big.png" <<'PY'
import sys; from pathlib import Path; from PIL import Image
src = sorted(Path(sys.argv[1]).glob("*.jpg"))[0]
Image.open(src).convert("RGB").resize((1536, 1024), Image.Resampling.LANCZOS).save(sys.argv[2])
PY
run() { # tree label
  rm -rf "$work/out_$2"
  # cd into the tree: `python -m` puts the working directory before PYTHONPATH.
  (cd "$1" && ANIMECLI_HOME="$work/home_$2" PYTHONPATH="$1" /usr/bin/time -f "%e s, peak %M KB" python -m animecli \
     convert "$work/in" "$work/out_$2" --tile 512 --max-size 1536 --threads "${THREADS:-1}" --format png -q \
     --report "$work/r_$2.json" 2>&1 | tail -1)
}
run "$old" before > /dev/null; run "$new" after > /dev/null  # warm-up: each tree exports its graphs
for r in 1 2; do for t in before after; do
  tree=$([ $t = before ] && echo "$old" || echo "$new"); echo "$t: $(run "$tree" $t)"
done; done
python - "$work" <<'PY'
import json, sys; import numpy as np; from PIL import Image
w = sys.argv[1]
a, b = (np.asarray(Image.open(f"{w}/out_{t}/big.png")).astype(float) for t in ("before", "after"))
mse = ((a - b) ** 2).mean()
print("after vs before:", "identical" if mse == 0 else f"{10 * np.log10(255 ** 2 / mse):.1f} dB, max {np.abs(a - b).max():.0f}")
for t in ("before", "after"):
    f = json.load(open(f"{w}/r_{t}.json"))["files"][0]
    print(f"{t}: infer {f['infer_ms']:.0f} ms, notes: {f['notes'] or '-'}")
PY
rm -rf "$work"
