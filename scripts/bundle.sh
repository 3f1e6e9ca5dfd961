#!/bin/sh
# Writes selfsup as one relocatable archive that runs without network
# where torch 2.11.0 is installed (docs/OFFLINE.md): the sources and
# scripts (git's tracked files), Deno, the npm dependencies (node_modules/,
# as deno.lock pins them), the built native library and, unless --no-tests,
# the compiled cargo test binaries and the library with the test hooks
# (native/target/testing/, scripts/build-testing.sh). Everything sits under selfsup/ in the
# archive; ./selfsup there needs neither npm, pip nor cargo.
#
# Usage: sh scripts/bundle.sh [--no-tests] OUT.tar.xz
# Run it through ./selfsup bundle, which first makes sure all of it is built.
# SELFSUP_BUNDLE_XZ_LEVEL: xz's level, 0-9 (default 6; 0 is fast and larger).
set -eu
die() { printf 'selfsup bundle: %s\n' "$*" >&2; exit 1; }
say() { printf '[bundle] %s\n' "$*" >&2; }

tests=1
[ "${1:-}" = --no-tests ] && { tests=0; shift; }
[ $# = 1 ] || die "usage: selfsup bundle [--no-tests] <out.tar.xz>"
case "$1" in
  *.tar.xz) ;;
  *) die "$1: the archive's name must end in .tar.xz" ;;
esac
OUT=$(cd "$(dirname "$1")" 2>/dev/null && pwd)/$(basename "$1") || die "$(dirname "$1"): no such folder"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

LIB=native/target/release/libselfsup_native.so
DENO_BIN=tools/deno/node_modules/deno/deno
[ -f "$LIB" ] || die "no $LIB: build it first (./selfsup version does)"
[ -x "$DENO_BIN" ] || die "no $DENO_BIN: install Deno first (./selfsup version does)"
if ! command -v git >/dev/null 2>&1 || ! git rev-parse --git-dir >/dev/null 2>&1; then
  die "$ROOT is not a git checkout: the bundle takes git's tracked files"
fi
command -v xz >/dev/null 2>&1 || die "xz not found (apt-get install xz-utils)"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
LIST="$STAGE/files"

# The npm dependencies exactly as deno.lock pins them, in node_modules/
# (Deno's own layout: node_modules/.deno/<pkg>@<version>/ plus links).
say "npm dependencies (node_modules/, from deno.lock)"
deno install --quiet --frozen --entrypoint cli/main.ts >/dev/null ||
  die "deno could not install the npm dependencies of deno.lock into node_modules/"

# Tracked files that exist (a deleted one may still be tracked) ...
git ls-files | while IFS= read -r f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\n' "$f"; done >"$LIST"
# ... and what a checkout builds or installs.
{
  echo node_modules
  echo tools/deno/node_modules/deno
  echo tools/deno/node_modules/.bin/deno
  echo "$LIB"
} >>"$LIST"

if [ "$tests" = 1 ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found: it builds the test binaries (or pass --no-tests)"
  say "cargo test binaries (native/target/release/test-bin/) and the testing library (native/target/testing/)"
  mkdir -p "$STAGE/bin"
  TESTING_LIB=$(sh scripts/build-testing.sh "$STAGE/executables") || die "cargo could not build the test binaries (see above)"
  echo "${TESTING_LIB#"$ROOT/"}" >>"$LIST"
  [ -s "$STAGE/executables" ] || die "cargo listed no test binaries"
  while IFS= read -r exe; do
    name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
    cp "$exe" "$STAGE/bin/$name"
    echo "bin/$name" >>"$STAGE/binaries"
    # Debug sections are most of their size and nothing runs them.
    strip --strip-debug "$STAGE/bin/$name" 2>/dev/null || true
  done <"$STAGE/executables"
fi

# What this bundle is: ./selfsup reads the marker to use the library as built.
{
  echo "selfsup bundle"
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -sm)"
  echo "torch 2.11.0 is needed where it runs (LIBTORCH, or python3's torch)"
} >"$STAGE/.selfsup-bundle"

say "writing $OUT (xz; a minute or two)"
# One tar over two roots, the checkout and the stage (marker, test
# binaries); everything under selfsup/. flags=r: names only, not link targets.
set -- -C "$ROOT" -T "$LIST" -C "$STAGE" .selfsup-bundle
[ "$tests" = 1 ] && set -- "$@" -T "$STAGE/binaries"
tar --owner=0 --group=0 --numeric-owner \
  --transform='flags=r;s,^bin/,native/target/release/test-bin/,;s,^,selfsup/,' -cf - "$@" |
  xz -T0 "-${SELFSUP_BUNDLE_XZ_LEVEL:-6}" >"$OUT.tmp" || die "could not write $OUT"
mv "$OUT.tmp" "$OUT"
say "wrote $OUT ($(du -h "$OUT" | cut -f1)); unpack it anywhere and run ./selfsup there (docs/OFFLINE.md)"
