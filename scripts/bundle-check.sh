#!/bin/sh
# Proves that a bundle (./selfsup bundle) runs without network: builds one,
# unpacks it into an empty folder and runs it there with an empty HOME, an
# environment of PATH=/usr/bin:/bin (no cargo, no npm of the developer's),
# npm's registry and every HTTP(S) proxy pointing at a closed port, and
# torch only through LIBTORCH (docs/OFFLINE.md). Then:
#   ./selfsup version, a 1-epoch demo, the carried cargo test binaries and
#   testing library;
#   with --quick: ./selfsup version and one epoch on 20 tiny images only,
#   from a bundle without test binaries, compressed fast (the Deno suite's
#   tests/bundle_test.ts runs this).
# Expects the environment of ./selfsup (LIBTORCH: the torch 2.11.0 to use).
#
# Usage: sh scripts/bundle-check.sh [--quick] [--keep DIR]
set -u
QUICK=0 KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "usage: sh scripts/bundle-check.sh [--quick] [--keep DIR]" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${LIBTORCH:-}" ] || { echo "bundle-check: LIBTORCH is not set (source .cache/env.sh)" >&2; exit 2; }
T=${KEEP:-$(mktemp -d)}
[ -n "$KEEP" ] || trap 'rm -rf "$T"' EXIT
mkdir -p "$T/home" "$T/run" || exit 1
step() { printf '== %s (%s s)\n' "$1" "$(($(date +%s) - START))"; }
START=$(date +%s)

step "bundle"
if [ "$QUICK" = 1 ]; then
  SELFSUP_BUNDLE_XZ_LEVEL=0 sh "$ROOT/scripts/bundle.sh" --no-tests "$T/selfsup.tar.xz" || exit 1
else
  sh "$ROOT/scripts/bundle.sh" "$T/selfsup.tar.xz" || exit 1
fi
echo "size: $(wc -c <"$T/selfsup.tar.xz") bytes"

step "unpack into an empty folder"
tar -xJf "$T/selfsup.tar.xz" -C "$T/run" || exit 1
B="$T/run/selfsup"
echo "unpacked: $(du -sm "$B" | cut -f1) MB"

# The offline environment: nothing of this shell's but LIBTORCH.
offline() {
  env -i PATH=/usr/bin:/bin HOME="$T/home" TMPDIR="${TMPDIR:-/tmp}" LANG=C.UTF-8 LIBTORCH="$LIBTORCH" \
    NPM_CONFIG_REGISTRY=http://127.0.0.1:9/ HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 \
    "$@"
}
status=0
check() {
  name=$1
  shift
  step "$name"
  (cd "$B" && offline "$@") || { echo "FAILED: $name"; status=1; }
}

check "./selfsup version" ./selfsup version
if [ "$QUICK" = 1 ]; then
  check "tiny data" ./selfsup data demo "$T/data" --seed 1
  # One epoch of 2 steps on the demo's images at 8 px, a ResNet-18 of 1/8 width.
  check "1 epoch, tiny" ./selfsup train --num-replicas 1 --data-dir "$T/data" --model-dir "$T/m" --log-dir "$T/r" \
    -a resnet18 --base-width 8 --representation-size 64 --head-latent-size 16 --nce-size 8 --small-stem \
    --image-size-override 8 --batch-size 1500 --epochs 1 --warmup 0 --optimizer momentum --lr 0.01 --no-cuda
else
  check "1-epoch demo" ./selfsup demo --epochs 1 --data-dir "$T/demo-data" --model-dir "$T/m" --log-dir "$T/r"
  check "cargo test binaries" sh scripts/cargo-tests.sh
  # What ./selfsup test there runs the Deno suite on (no cargo: looked up only).
  check "the carried testing library" sh scripts/build-testing.sh
fi
step "done: $([ $status = 0 ] && echo ok || echo FAILED)"
exit $status
