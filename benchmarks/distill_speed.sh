#!/usr/bin/env bash
# Training speed of the three recipes with the teachers' real architectures (random weights:
# speed needs only the architecture), for docs/distill.md's "Training speed" table:
#   benchmarks/distill_speed.sh OUT_DIR [cpu|cuda]
# Then: python benchmarks/distill_speed_table.py OUT_DIR   (markdown table + wall-time arithmetic)
# On a CPU the batches are small (1 xmag region = 16 teacher tiles; 2 h0mini / expert tiles) and
# xmag times one step (STEPS_XMAG=1 WARMUP_XMAG=0: one ViT-g step takes minutes on 2 cores) so
# that the whole table fits an hour; on a GPU use the cards' batches (BATCH_XMAG=48 ...) and
# more steps (STEPS=50 ...).
set -euo pipefail
out=${1:?usage: benchmarks/distill_speed.sh OUT_DIR [cpu|cuda]}
device=${2:-cpu}
steps=${STEPS:-2}
warmup=${WARMUP:-1}
bx=${BATCH_XMAG:-1}
steps_x=${STEPS_XMAG:-$steps}
warmup_x=${WARMUP_XMAG:-$warmup}
bh=${BATCH_H0MINI:-2}
be=${BATCH_EXPERT:-2}
ep=${EDGEPATH:-edgepath}
mkdir -p "$out"
run() {  # label, steps, warm-up steps, then the bench arguments
  local label=$1 n=$2 w=$3
  shift 3
  if [ -s "$out/$label.json" ]; then echo "skip $label (done)"; return; fi
  echo "== $label"
  $ep -q bench distill "$@" --device "$device" --steps "$n" --warmup "$w" \
    ${THREADS:+--threads "$THREADS"} --json \
    > "$out/$label.json.tmp" && mv "$out/$label.json.tmp" "$out/$label.json"
}
for student in vit-s14 vit-b14; do
  for teacher in uni2-h virchow2 h-optimus-0; do
    # the cache's gain is measured for the papers' own teachers (it doubles the teacher's time):
    # XMAG's UNI2-h, and H0-mini's H-optimus-0 into its ViT-B/14
    cached=--no-cached
    if [ "$student" = vit-s14 ] && [ "$teacher" = uni2-h ]; then cached=; fi
    run "xmag-$teacher-$student" "$steps_x" "$warmup_x" xmag --teacher "$teacher" --student "$student" \
      --batch-size "$bx" $cached
    cached=--no-cached
    if [ "$student" = vit-b14 ] && [ "$teacher" = h-optimus-0 ]; then cached=; fi
    run "h0mini-$teacher-$student" "$steps" "$warmup" h0mini --teacher "$teacher" --student "$student" \
      --batch-size "$bh" $cached
  done
  cached=--no-cached
  if [ "$student" = vit-s14 ]; then cached=; fi
  run "expert-3teachers-$student" "$steps" "$warmup" expert --teacher uni2-h --teacher virchow2 \
    --teacher h-optimus-0 --student "$student" --batch-size "$be" $cached
done
