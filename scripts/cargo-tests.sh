#!/bin/sh
# Runs the cargo tests of native/ with libtest's arguments (a name filter,
# --include-ignored, --test-threads N, ...): through cargo in a checkout,
# or, in a bundle (scripts/bundle.sh) that may have no cargo, the test
# binaries cargo built, from native/ as cargo runs them. Each binary ends
# with "test result: ... N passed; N failed; N ignored"; the exit code is
# non-zero when any binary failed. Expects the environment of ./selfsup.
#
# Usage: sh scripts/cargo-tests.sh [LIBTEST ARGS...]
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS="$ROOT/native/target/release/test-bin"
cd "$ROOT/native" || exit 1
if [ -f "$ROOT/.selfsup-bundle" ] || ! command -v cargo >/dev/null 2>&1; then
  [ -d "$BINS" ] || { echo "no cargo and no $BINS: the cargo tests cannot run here"; exit 1; }
  rc=0
  for t in "$BINS"/*; do "$t" --quiet "$@" || rc=1; done
  exit $rc
fi
# The hooks some tests call (amp_test) are behind the testing feature;
# scripts/build-testing.sh builds the same.
exec cargo test --release --features testing --quiet -- "$@"
