#!/bin/bash
# Watch mode with a file copied in slowly (issue 25): a photo arrives in 4 chunks 1.5 s apart
# (a slow network copy), a second one at once; `animecli watch` must convert each exactly once,
# after its copy is complete, and stop cleanly on SIGTERM.
#   bash bench/watch_demo.sh [PHOTO] [MODEL]      (default: the first val photo, hayao_lite3)
set -u
photo=${1:-$(ls ../shared/photos/val/*.jpg | head -1)}
model=${2:-hayao_lite3}
dir=$(mktemp -d); mkdir -p "$dir/in" "$dir/out"
animecli watch "$dir/in" "$dir/out" -m "$model" --settle 2 --report "$dir/report.jsonl" > "$dir/log.txt" 2>&1 &
pid=$!
sleep 3
size=$(stat -c %s "$photo"); chunk=$(( (size + 3) / 4 ))
echo "copying $(basename "$photo") ($size bytes) in 4 chunks of $chunk bytes, 1.5 s apart"
for i in 0 1 2 3; do
  dd if="$photo" of="$dir/in/slow.jpg" bs=$chunk skip=$i seek=$i count=1 conv=notrunc status=none
  sleep 1.5
done
cp "$photo" "$dir/in/quick.jpg"
sleep 12
kill -TERM $pid; wait $pid; rc=$?
echo "watch exit code: $rc (143 = stopped by SIGTERM)"
echo "--- log"; cat "$dir/log.txt"
echo "--- outputs"; ls -l "$dir/out"
cmp <(python -c "import sys; print(open(sys.argv[1],'rb').read()==open(sys.argv[2],'rb').read())" "$photo" "$dir/in/slow.jpg") <(echo True) \
  && echo "slow.jpg arrived whole"
echo "--- report records"; grep -c '"status"' "$dir/report.jsonl" || true
rm -rf "$dir"
