#!/bin/sh
# Builds native/ with the `testing` feature (the test and benchmark hooks
# that the release library leaves out; docs/DESIGN.md) together with the
# cargo test binaries, and prints the path of that library, which the Deno
# tests and bench/step load through SELFSUP_NATIVE_LIB:
#   native/target/testing/libselfsup_native.so
# cargo test builds the library but, unlike cargo build, does not copy it
# over target/release/libselfsup_native.so: the release library stays the
# one ./selfsup uses, and neither build undoes the other's output. (Both
# share cargo's one slot for the crate, so alternating them recompiles the
# crate, never its dependencies.) In a bundle, or without cargo, the
# library comes built (scripts/bundle.sh) and is only looked up.
#
# Usage: sh scripts/build-testing.sh [EXECUTABLES]
#   EXECUTABLES: a file that gets the paths of the cargo test binaries.
# Expects the environment of ./selfsup (.cache/env.sh).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/native/target/testing/libselfsup_native.so"
die() { printf 'selfsup: %s\n' "$*" >&2; exit 1; }

if [ -f "$ROOT/.selfsup-bundle" ] || ! command -v cargo >/dev/null 2>&1; then
  [ -f "$OUT" ] || die "no cargo and no $OUT: the testing library cannot be built here (a bundle made with --no-tests has none)"
  echo "$OUT"
  exit 0
fi
JSON=$(mktemp)
trap 'rm -f "$JSON" "$OUT.tmp"' EXIT
(cd "$ROOT/native" && cargo test --release --features testing --no-run --quiet --message-format=json) >"$JSON" ||
  die "cargo could not build native/ with the testing feature (see above)"
# cargo names its artifacts in its JSON messages: the library's .so (the
# cdylib), and the test executables (a profile with "test":true).
lib=$(grep -F '"name":"selfsup_native"' "$JSON" | grep -F '"kind":["cdylib"' | sed -n 's/.*"filenames":\[[^]]*"\([^"]*\.so\)".*/\1/p' | head -n 1)
[ -n "$lib" ] && [ -f "$lib" ] || die "cargo did not name the testing library in its messages"
mkdir -p "$(dirname "$OUT")"
cp "$lib" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
if [ $# -gt 0 ]; then
  grep -E '"profile":\{[^}]*"test":true\}' "$JSON" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' >"$1"
fi
echo "$OUT"
