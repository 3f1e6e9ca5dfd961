#!/bin/sh
# selfsup's check of a GPU machine, in one call (docs/OFFLINE.md): versions
# and device, the tests that apply on a GPU, the step benchmark against
# eager PyTorch, the demo recipe in fp32/bf16/fp16 with its accuracy, and
# the end-to-end epoch (pipeline efficiency); one summary table at the end.
# Each part runs under its own time limit, cut to what is left of the
# budget, so that one hang cannot eat the rest. Without a GPU the parts
# shrink or are skipped, and the table says which and why.
#
# Usage: sh scripts/gpu-check.sh [--bundle FILE.tar.xz] [--out DIR] [--budget S] [--only REGEX]
#   --bundle  unpack this bundle (./selfsup bundle) into a temporary folder
#             and check from there: what a machine without network needs
#   --out     where report.md and logs/ go (default: $OUT if set, else
#             .cache/gpu-check)
#   --budget  seconds for all parts (default 470 with a GPU, 1500 without)
#   --only    run only the parts whose names match this regular expression
#
# Parts are listed in PARTS below, each a function part_<name> run in its
# own process (sh gpu-check.sh --part <name>); one writes its log to
# stdout, its one-line result with `result`, and exits 0 (ok), 3
# (skipped) or anything else (failed). A new part is one line in PARTS
# and one function.
set -u

# name       limit(s)  what
PARTS='
versions     60   versions, device and driver
cargo        150  cargo tests, with the GPU-only ones
deno         150  Deno tests that name GPU or CUDA
step         240  bench/step: ResNet-50 224 px, SimCLR fp32/bf16/fp16 and BYOL bf16 against eager PyTorch
precision    150  bench/precision: SimCLR, one seed, fp32/bf16/fp16, selfsup against torch.autocast
demo         200  the demo recipe in fp32, bf16 and fp16 on the GPU, with its test accuracy
pipeline     170  bench/epoch: one epoch end to end against PyTorch (pipeline efficiency)
fmnist       300  Fashion-MNIST accuracy preset, optional (SELFSUP_GPU_CHECK_FMNIST=1)
'

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF="$ROOT/scripts/gpu-check.sh"

# --- the parts (run as separate processes, environment set up by main) ---

result() { printf '%s\n' "$*" >"$L/$PART.result"; }
skip() { result "$*"; echo "skipped: $*"; exit 3; }

part_versions() {
  v=$(./selfsup version) || return 1
  echo "$v"
  command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$SELFSUP_PYTHON" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
  echo "cores $(nproc), $(uname -sm)"
  [ -f .selfsup-bundle ] && cat .selfsup-bundle
  if [ "$GPU" = 1 ]; then
    name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    result "$v ${name:+on $name}"
  else
    result "$v; no GPU: the GPU parts shrink or are skipped"
  fi
}

part_cargo() {
  # Built by cargo here, or carried in a bundle (native/target/release/test-bin).
  if [ "$GPU" = 1 ]; then
    sh scripts/cargo-tests.sh --include-ignored
  else
    # The whole suite is ./selfsup test's; here the DDP smoke test, on Gloo.
    echo "no GPU: only the world-size-1 DDP test (on Gloo; its NCCL twin is ignored without a GPU)"
    sh scripts/cargo-tests.sh a_group_of_world_size_one_trains
  fi
  rc=$?
  sums=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$L/$PART.log" |
    awk '{p += $1; f += $2; i += $3} END {printf "%d passed, %d failed, %d ignored", p, f, i}')
  result "$sums$([ "$GPU" = 1 ] || echo ' (no GPU: the DDP smoke test only)')"
  return $rc
}

part_deno() {
  # A test that needs a GPU says GPU or CUDA in its name (docs/OFFLINE.md).
  # The tests load the library with the test hooks (scripts/build-testing.sh).
  SELFSUP_NATIVE_LIB=$(sh scripts/build-testing.sh) || return 1
  export SELFSUP_NATIVE_LIB
  deno test --allow-all --quiet --filter '/GPU|CUDA/' tests/
  rc=$?
  line=$(sed 's/\x1b\[[0-9;]*m//g' "$L/$PART.log" | grep -E '^(ok|FAILED) \|' | tail -n 1)
  result "${line:-no summary}$([ "$GPU" = 1 ] || echo ' (no GPU: the GPU-only ones are ignored)')"
  return $rc
}

# Prints the lines of a markdown table from a log.
table_of() { grep -E '^\|' "$1"; }

part_step() {
  if [ "$GPU" = 1 ]; then
    "$SELFSUP_PYTHON" -u bench/step/bench.py --device cuda --methods simclr --precisions fp32,bf16,fp16 --repeat 1 --warmup 5 --steps 20 &&
      "$SELFSUP_PYTHON" -u bench/step/bench.py --device cuda --methods byol --precisions bf16 --repeat 1 --warmup 5 --steps 20
  else
    echo "no GPU: the CPU step (ResNet-18, small stem, 32 px, fp32), one run per side"
    "$SELFSUP_PYTHON" -u bench/step/bench.py --repeat 1
  fi
  rc=$?
  ratios=$(table_of "$L/$PART.log" | awk -F'|' '$4 ~ /selfsup/ {gsub(/ /, "", $2); gsub(/ /, "", $3); gsub(/ /, "", $7); printf "%s%s %s %s", sep, $2, $3, $7; sep = ", "}')
  result "selfsup img/s vs PyTorch: ${ratios:-none}$([ "$GPU" = 1 ] || echo ' (CPU, ResNet-18 32 px)')"
  return $rc
}

part_precision() {
  # Mixed precision against fp32 and torch.autocast: one seed of SimCLR here
  # (the whole table, 3 seeds and BYOL, is bench/precision/bench.py's own
  # command in its header: about 12 minutes on one GPU).
  [ "$GPU" = 1 ] || skip "no GPU"
  data="$W/demo-data"
  [ -d "$data/train" ] || ./selfsup data demo "$data" >/dev/null || return 1
  "$SELFSUP_PYTHON" -u bench/precision/bench.py --device cuda --data "$data" --methods simclr --seeds 0 \
    --precisions fp32,bf16,fp16 --threads 4 --workers 8 --out "$W/precision"
  rc=$?
  result "$(tail -n 1 "$L/$PART.log")"
  return $rc
}

# The demo preset's recipe as train flags: the settings `demo` changes from
# `train`'s (the preset itself trains on the CPU).
demo_flags() {
  ./selfsup demo --print-config >"$W/demo-config.json" &&
    ./selfsup train --print-config --num-replicas 1 >"$W/train-config.json" &&
    "$SELFSUP_PYTHON" - "$W/demo-config.json" "$W/train-config.json" <<'PY'
import json, re, sys
demo, train = (json.load(open(p)) for p in sys.argv[1:3])
# Derived or per-run settings, and the preset's CPU choice.
skip = {"runName", "batchSizePerReplica", "worldSize", "rank", "localRank", "localWorldSize", "master", "port",
        "launchedBy", "noCuda", "uid", "dataDir", "modelDir", "logDir", "sources"}
flags = []
for k, v in demo.items():
    if k in skip or train.get(k) == v or v is None or v is False:
        continue
    flag = "--" + re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), k)
    flags += [flag] if v is True else [flag, ",".join(map(str, v)) if isinstance(v, list) else str(v)]
print(" ".join(flags))
PY
}

part_demo() {
  flags=$(demo_flags) || return 1
  data="$W/demo-data"
  [ -d "$data/train" ] || ./selfsup data demo "$data" >/dev/null || return 1
  if [ "$GPU" = 1 ]; then precisions="fp32 bf16 fp16"; extra=; else
    precisions=fp32
    extra="--epochs 1 --warmup 0"
    echo "no GPU: fp32 only, 1 epoch (fp16 needs a GPU; bf16 on 2 CPU cores is not what this checks)"
  fi
  echo "recipe: $flags $extra"
  summary="" rc=0
  for p in $precisions; do
    t0=$(date +%s)
    # shellcheck disable=SC2086  # flags are words on purpose
    ./selfsup train $flags $extra --precision "$p" --data-dir "$data" --uid "gpucheck-$p" \
      --model-dir "$W/demo-models" --log-dir "$W/demo-runs" --no-resume >"$L/demo-$p.log" 2>&1
    r=$?
    tail -n 4 "$L/demo-$p.log"
    top1=$(sed -n 's/.*online linear classifier after epoch [0-9]*: top-1 \([0-9.]*\) %.*/\1/p' "$L/demo-$p.log" | tail -n 1)
    [ $r = 0 ] || rc=1
    summary="$summary${summary:+, }$p ${top1:-failed} % in $(($(date +%s) - t0)) s"
  done
  result "top-1: $summary$([ "$GPU" = 1 ] || echo ' (CPU: 1 epoch)')"
  return $rc
}

part_pipeline() {
  if [ "$GPU" = 1 ]; then
    "$SELFSUP_PYTHON" -u bench/epoch/bench.py --device cuda --methods simclr --train 2560 --test 256 --px 256 --size 224 \
      --arch resnet50 --small-stem no --batch 256 --workers 12 --threads 12 --data "$W/epoch-data"
  else
    # bench/epoch's CPU defaults, cut to 128 images and 2 epochs (one
    # measured) so that both sides fit the part's limit on 2 cores.
    echo "no GPU: bench/epoch's CPU defaults (ResNet-18, 32 px) on 128 images, 2 epochs, SimCLR only"
    "$SELFSUP_PYTHON" -u bench/epoch/bench.py --methods simclr --train 128 --test 32 --epochs 2 --data "$W/epoch-data"
  fi
  rc=$?
  rows=$(table_of "$L/$PART.log" | grep -ci selfsup)
  result "$( [ "$rows" -gt 0 ] && echo "table above ($rows selfsup rows)" || echo "no table")$([ "$GPU" = 1 ] || echo ' (CPU)')"
  return $rc
}

part_fmnist() {
  # Optional: the Fashion-MNIST accuracy preset, where its data is at hand.
  [ "${SELFSUP_GPU_CHECK_FMNIST:-0}" = 1 ] || skip "optional (SELFSUP_GPU_CHECK_FMNIST=1 runs it)"
  [ -n "${SELFSUP_FMNIST_CMD:-}" ] || skip "no command: set SELFSUP_FMNIST_CMD to the preset's command line"
  sh -c "$SELFSUP_FMNIST_CMD"
  rc=$?
  result "$(grep -E 'top-1' "$L/$PART.log" | tail -n 1)"
  return $rc
}

# --- one part, in its own process ------------------------------------------

if [ "${1:-}" = --part ]; then
  PART=$2
  cd "$ROOT" || exit 1
  "part_$PART" >>"$L/$PART.log" 2>&1
  exit $?
fi

# --- main -------------------------------------------------------------------

BUNDLE="" OUTDIR=${OUT:-} BUDGET="" ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h | --help) sed -n '2,22s/^# \{0,1\}//p' "$SELF"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
  esac
done

if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE" ] || { echo "gpu-check: no bundle $BUNDLE" >&2; exit 2; }
  dir=$(mktemp -d)
  echo "unpacking $BUNDLE into $dir"
  # Python's tarfile: xz may be missing where python3 is not.
  python3 - "$BUNDLE" "$dir" <<'PY' || exit 1
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    try:
        t.extractall(sys.argv[2], filter="tar")
    except TypeError:  # Python < 3.12
        t.extractall(sys.argv[2])
PY
  OUTDIR=${OUTDIR:-$ROOT/.cache/gpu-check}
  exec sh "$dir/selfsup/scripts/gpu-check.sh" --out "$OUTDIR" ${BUDGET:+--budget "$BUDGET"} ${ONLY:+--only "$ONLY"}
fi

START=$(date +%s)
# $O gets the report (report.md: the summary, then every part's log) and
# the logs (logs/); data, checkpoints and runs go to a temporary folder, $W.
O=${OUTDIR:-$ROOT/.cache/gpu-check}
mkdir -p "$O/logs" || exit 1
O=$(cd "$O" && pwd)
L="$O/logs"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$ROOT" || exit 1
export O L W

# Set up once (offline: the registry address fails at once if anything asks).
export NPM_CONFIG_REGISTRY="${NPM_CONFIG_REGISTRY:-http://127.0.0.1:9/}"
export DENO_NO_UPDATE_CHECK=1
./selfsup version >"$L/setup.log" 2>&1 || { echo "gpu-check: ./selfsup could not start:"; cat "$L/setup.log"; exit 1; }
# shellcheck source=/dev/null  # written by scripts/bootstrap.sh
. "$ROOT/.cache/env.sh"
export PATH="$ROOT/tools/deno/node_modules/.bin:$PATH"
export SELFSUP_PYTHON="${SELFSUP_PYTHON:-python3}"
GPU=0
grep -q '"cuda":true' "$L/setup.log" && GPU=1
export GPU
BUDGET=${BUDGET:-$([ "$GPU" = 1 ] && echo 470 || echo 1500)}
echo "gpu-check: $([ "$GPU" = 1 ] && echo "GPU" || echo "no GPU (CPU: parts shrink or are skipped)"), budget ${BUDGET} s, logs in $O"

left() { echo $((BUDGET - ($(date +%s) - START))); }
ROWS="$L/summary.tsv"
: >"$ROWS"
echo "$PARTS" | while read -r name limit what; do
  [ -n "$name" ] || continue
  if [ -n "$ONLY" ] && ! echo "$name" | grep -Eq "$ONLY"; then continue; fi
  l=$(left)
  rm -f "$L/$name.result" "$L/$name.log"
  if [ "$l" -lt 20 ]; then
    printf '%s\tskipped\t0\tno time left in the budget\n' "$name" >>"$ROWS"
    continue
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  echo "== $name: $what (limit ${limit} s, at $(($(date +%s) - START)) s)"
  t0=$(date +%s)
  timeout -k 5 "$limit" sh "$SELF" --part "$name"
  rc=$?
  secs=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    3) status=skipped ;;
    124 | 137) status="timed out" ;;
    *) status="FAILED ($rc)" ;;
  esac
  sed 's/\x1b\[[0-9;]*m//g' "$L/$name.log" 2>/dev/null | grep -v '^\s*$' | tail -n "${TAILN:-25}" | sed 's/^/   /'
  res=$(cat "$L/$name.result" 2>/dev/null || echo "no result (see $L/$name.log)")
  echo "   -> $status in ${secs} s: $res"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$res" >>"$ROWS"
done

summary() {
  echo "## gpu-check summary ($([ "$GPU" = 1 ] && echo GPU || echo "no GPU"), $(($(date +%s) - START)) s of ${BUDGET} s)"
  echo
  echo "| part | status | s | result |"
  echo "| --- | --- | ---: | --- |"
  awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$ROWS"
}
echo
summary
{
  summary
  for f in "$L"/*.log; do printf '\n## %s\n\n```\n' "$(basename "$f")"; sed 's/\x1b\[[0-9;]*m//g' "$f"; echo '```'; done
} >"$O/report.md"
echo
echo "report: $O/report.md"
# Fails when a part failed or timed out.
awk -F'\t' '$2 ~ /^(FAILED|timed out)/ {bad = 1} END {exit bad}' "$ROWS"
