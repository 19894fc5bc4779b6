#!/usr/bin/env bash
# GPU proof: edgepath's GPU half on one CUDA GPU in under 8 minutes, one JSON per part, then
# gpu-<device>-<date>.json combining them (docs/gpu-proof.md says how to run it on a lent GPU).
#
#   bash benchmarks/gpu_proof.sh [OUT_DIR]             # on the GPU machine (OUT_DIR: default $OUT)
#   bash benchmarks/gpu_proof.sh --dry-run OUT_DIR     # on CPU with tiny models (tests/test_gpu_proof.py)
#
# Parts, each under its own time limit and all under one overall budget:
#   doctor                 edgepath doctor --json
#   throughput-students    bench throughput vit-s14 vit-b14, torch on cuda, fp32/bf16/fp16, batch 64,256
#   throughput-teachers    the same for the uni2-h and h-optimus-0 architectures (random weights)
#   distill-xmag           bench distill xmag, uni2-h -> vit-s14, bf16, 20 timed steps, live + cached
#   distill-h0mini         bench distill h0mini, h-optimus-0 -> vit-b14, the same
#   embed                  edgepath embed of a synthesized slide on cuda bf16, vs the engine alone
#   pytest-gpu             pytest -m gpu tests
# Environment:
#   PY       the python to run (default python3; the test passes its own)
#   PARTS    the parts to run, space-separated (default all; a rerun names the failed ones)
#   BUDGET   overall seconds for the parts (default 450 on a GPU, 600 in a dry run)
#   T_<PART> one part's limit in seconds, e.g. T_THROUGHPUT_TEACHERS=200
#   TP_EXTRA more bench throughput options, e.g. "--compile"
# Wheels in .whl/ (benchmarks/gpu_wheels.sh) are installed into /tmp/site without network first.
set -uo pipefail

dry=0
if [ "${1:-}" = "--dry-run" ]; then
  dry=1
  shift
fi
out=${1:-${OUT:-}}
if [ -z "$out" ]; then
  echo "usage: benchmarks/gpu_proof.sh [--dry-run] OUT_DIR (or set OUT)" >&2
  exit 2
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 2
PY=${PY:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-proof.XXXXXX")
status="$work/status.tsv"
: >"$status"
started=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg

# --- install: carried wheels (OpenSlide, imagecodecs) into /tmp/site; the project from the tree
site=
if [ $dry = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  site=${SITE:-/tmp/site}
  echo "== installing $(ls .whl/*.whl | wc -l) carried wheels into $site"
  if ! $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl; then
    echo "wheel install failed" >&2
    exit 1
  fi
fi
export PYTHONPATH="$repo${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
# -v: progress lines on stderr, so that a part stopped at its limit shows where it was (the
# first H200 run, 2026-12-04, lost its throughput and distill parts to their limits with -q and
# no clue); stdout stays the one JSON object
ep=("$PY" -m edgepath -v)
if ! "$PY" -c 'import openslide, imagecodecs' 2>/dev/null; then
  echo "warning: no OpenSlide / imagecodecs here: the distill and embed parts will fail;" \
    "run benchmarks/gpu_wheels.sh where pip works and carry .whl" >&2
fi

# --- sizes: the real run on a GPU, or tiny ones on CPU
if [ $dry = 1 ]; then
  budget=${BUDGET:-600}
  # vit-test14 is a test-only student card (tests/cards/students, never shipped)
  export EDGEPATH_CARDS="$repo/tests/cards${EDGEPATH_CARDS:+:$EDGEPATH_CARDS}"
  students=(vit-test14)
  teachers=(tiny-teacher)
  tp=(--engines torch --device cpu --precision fp32 --batch 2 --rounds 1 --per-round 1
    --warmup 1 --threads 2)
  tp_teachers=("${tp[@]}")
  dist=(--device cpu --steps 1 --warmup 0 --batch-size 1)
  xmag=(xmag --teacher tiny-teacher --student vit-test14)
  h0mini=(h0mini --teacher tiny-teacher --student vit-test14 --set loss.dino_out_dim=64
    --set loss.ibot_out_dim=64 --set loss.head_hidden_dim=32 --set loss.head_bottleneck_dim=16
    --set views.local_crops=1)
  embed=(--model vit-test14 --device cpu --precision fp32 --tiles 40 --batch 8 --workers 1
    --preload 16)
  limit_default=180
else
  budget=${BUDGET:-450}
  students=(vit-s14 vit-b14)
  teachers=(uni2-h h-optimus-0)
  tp=(--engines torch --device cuda --precision fp32,bf16,fp16 --batch 64,256 --rounds 3
    --per-round 2 --warmup 2 --threads 8)
  tp_teachers=(--engines torch --device cuda --precision fp32,bf16,fp16 --batch 64,256
    --rounds 2 --per-round 2 --warmup 1 --threads 8)
  # 20 timed steps at the cards' batches (xmag 48 regions, h0mini 64 tiles): on 2026-12-04 one
  # H200 ran xmag at batch 16 at 2.1 steps/s and h0mini at batch 32 at 0.9 steps/s (data-bound)
  # 8 of the machine's 16 cores build the micro-batches (train.num_workers)
  dist=(--device cuda --steps 20 --warmup 3 --set train.precision=bf16 --set train.num_workers=8)
  xmag=(xmag --teacher uni2-h --student vit-s14)
  h0mini=(h0mini --teacher h-optimus-0 --student vit-b14)
  embed=(--model vit-s14 --device cuda --precision bf16 --tiles 3000 --batch 256 --workers 8
    --preload 512)
  limit_default=
fi
# shellcheck disable=SC2206  # TP_EXTRA is a list of options
tp_extra=(${TP_EXTRA:-})

# per-part limits (seconds); the sum on a GPU is above the budget: the budget is the bound
declare -A limit=(
  [doctor]=${T_DOCTOR:-${limit_default:-45}}
  [throughput-students]=${T_THROUGHPUT_STUDENTS:-${limit_default:-75}}
  [throughput-teachers]=${T_THROUGHPUT_TEACHERS:-${limit_default:-150}}
  [distill-xmag]=${T_DISTILL_XMAG:-${limit_default:-120}}
  [distill-h0mini]=${T_DISTILL_H0MINI:-${limit_default:-100}}
  [embed]=${T_EMBED:-${limit_default:-100}}
  [pytest-gpu]=${T_PYTEST_GPU:-${limit_default:-120}}
)
all_parts="doctor throughput-students throughput-teachers distill-xmag distill-h0mini embed pytest-gpu"
parts=${PARTS:-$all_parts}
for p in $parts; do
  if [ -z "${limit[$p]:-}" ]; then
    echo "unknown part '$p'; expected some of: $all_parts" >&2
    exit 2
  fi
done

ms() { echo $(($(date +%s%N) / 1000000)); }

# part NAME CMD...: run CMD under the part's limit (cut to what the budget has left); its stdout
# must be one JSON object, kept as OUT/NAME.json; its stderr goes to a log whose tail the
# combined result keeps when the part fails.
part() {
  local name=$1
  shift
  case " $parts " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((budget - ($(date +%s) - started)))
  local t=${limit[$name]}
  ((t > left)) && t=$left
  local log="$work/$name.log" tmp="$work/$name.json"
  if ((t < 15)); then
    echo "== $name: skipped, ${left}s of the ${budget}s budget left (rerun with PARTS=$name)"
    echo "budget exhausted before this part" >"$log"
    "$PY" benchmarks/gpu_proof.py keep /dev/null "$out/$name.json" "$name" skipped 0 "$log" >/dev/null
    printf '%s\tskipped\t0\t0\t%s\t%s\n' "$name" "$t" "$log" >>"$status"
    return 0
  fi
  echo "== $name (limit ${t}s)"
  local t0 rc state secs
  t0=$(ms)
  timeout -k 10 "$t" "$@" >"$tmp" 2>"$log"
  rc=$?
  t0=$(($(ms) - t0))
  secs=$(printf '%d.%03d' $((t0 / 1000)) $((t0 % 1000)))
  if ((rc == 124 || rc == 137)); then
    state=timeout
  elif ((rc != 0)); then
    state=failed
  else
    state=ok
  fi
  state=$("$PY" benchmarks/gpu_proof.py keep "$tmp" "$out/$name.json" "$name" "$state" "$rc" \
    "$log") || state=failed
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$state" "$rc" "$secs" "$t" "$log" >>"$status"
  echo "   $name: $state (exit $rc) in ${secs%.*}s"
  [ $state = ok ] || tail -n 15 "$log" | sed 's/^/   | /'
}

part doctor "${ep[@]}" doctor --json
part throughput-students "${ep[@]}" bench throughput "${students[@]}" "${tp[@]}" \
  ${tp_extra[@]+"${tp_extra[@]}"} --json
part throughput-teachers "${ep[@]}" bench throughput "${teachers[@]}" "${tp_teachers[@]}" \
  ${tp_extra[@]+"${tp_extra[@]}"} --json
part distill-xmag "${ep[@]}" bench distill "${xmag[@]}" "${dist[@]}" --json
part distill-h0mini "${ep[@]}" bench distill "${h0mini[@]}" "${dist[@]}" --json
part embed "$PY" benchmarks/gpu_proof.py embed "${embed[@]}" --work "$work/embed"
part pytest-gpu "$PY" benchmarks/gpu_proof.py pytest -- -m gpu tests

echo "== combine ($((($(date +%s) - started)))s so far)"
combine=("$PY" benchmarks/gpu_proof.py combine "$out" "$status" --started "$started")
[ $dry = 1 ] && combine+=(--dry-run)
timeout -k 5 60 "${combine[@]}"
rc=$?
rm -rf "$work"
exit $rc
