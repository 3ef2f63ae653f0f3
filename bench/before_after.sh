#!/bin/bash
# `animecli bench` of an older commit and of this tree, alternating (before, after, before, after),
# each with its own ANIMECLI_HOME, JSON rows in /tmp/ab_{before,after}_{1,2}.json.
#   bash bench/before_after.sh 4f6ca42 [extra bench options, e.g. -b eager -b onnx]
set -e
rev=${1:?usage: bench/before_after.sh REV [bench options]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
old=$(mktemp -d); git -C "$root" archive "$rev" | tar -x -C "$old"
for round in 1 2; do for side in before after; do
  dir=$old; [ $side = after ] && dir=$root
  (cd "$dir" && ANIMECLI_HOME=/tmp/ab_home_$side PYTHONPATH="$dir" python -m animecli bench --no-rss --no-upstream \
    --repeat 3 --max-images 4 --threads 2 -m "$root/weights/hayao_lite3.pt" "$@" --json /tmp/ab_${side}_${round}.json)
done; done
