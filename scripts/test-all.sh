#!/bin/sh
# Runs every test suite (Deno's and cargo's), then prints one line
# "N passed, N failed, N skipped" summing them; exits non-zero on any
# failure. Expects the environment of ./selfsup (it calls this script).
#
# Usage: sh scripts/test-all.sh [FILTER]
#   FILTER: run only the tests whose names contain it, in both suites.
# Tests that need a GPU (cargo's #[ignore = "needs a GPU…"], Deno's
# ignore flags) run only where libtorch sees one.
set -u
case "${1:-}" in
  -h | --help)
    sed -n '2,9s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
esac
FILTER=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export DENO_NO_UPDATE_CHECK=1
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
status=0

# The library with the test hooks (scripts/build-testing.sh): what the
# Deno tests, and the ./selfsup they start, load instead of the release one.
lib=$(sh scripts/build-testing.sh) || { echo "0 passed, 1 failed, 0 skipped (no testing library)"; exit 1; }
export SELFSUP_NATIVE_LIB="$lib"

# cargo's GPU tests are #[ignore]d; with a GPU they are included.
gpu=$(deno run --allow-all --quiet cli/main.ts version 2>/dev/null | sed -n 's/.*"cuda":\(true\|false\).*/\1/p')
set --
[ -n "$FILTER" ] && set -- "$FILTER"
[ "$gpu" = true ] && set -- "$@" --include-ignored
echo "== cargo test (native/)${FILTER:+ matching $FILTER}${gpu:+, GPU: $gpu} =="
# (The exit codes go through files: a pipeline's status is tee's.)
{ sh scripts/cargo-tests.sh "$@" 2>&1; echo $? >"$LOG/cargo.rc"; } | tee "$LOG/cargo.txt"
echo "== deno test (tests/)${FILTER:+ matching $FILTER} =="
if [ -n "$FILTER" ]; then set -- --filter "$FILTER"; else set --; fi
{ deno test --allow-all --quiet "$@" tests/ 2>&1; echo $? >"$LOG/deno.rc"; } | tee "$LOG/deno.txt"

# cargo: "test result: ok. 12 passed; 0 failed; 1 ignored; ..." per binary.
# deno:  "ok | 5 passed | 0 failed | 1 ignored (3s)" or "FAILED | 4 passed | 1 failed (3s)".
# Colour codes are stripped first.
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
counts=$(
  {
    strip "$LOG/cargo.txt" | sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p'
    strip "$LOG/deno.txt" | sed -n 's/^\(ok\|FAILED\) | \([0-9]*\) passed[^|]*| \([0-9]*\) failed\( | \([0-9]*\) ignored\)\{0,1\}.*/\2 \3 \5/p'
  } | awk '{p += $1; f += $2; s += ($3 == "" ? 0 : $3)} END {print p+0, f+0, s+0}'
)
# shellcheck disable=SC2086  # three numbers, split on purpose
set -- $counts
passed=$1 failed=$2 skipped=$3
# A suite that crashed before its summary, or failed without counting a
# failed test (a test binary that crashed), counts as a failure.
grep -q '^test result' "$LOG/cargo.txt" || { failed=$((failed + 1)); echo "cargo test printed no result" >&2; }
strip "$LOG/deno.txt" | grep -Eq '^(ok|FAILED) \|' || { failed=$((failed + 1)); echo "deno test printed no result" >&2; }
for suite in cargo deno; do
  rc=$(cat "$LOG/$suite.rc" 2>/dev/null || echo 1)
  [ "$rc" != 0 ] && [ "$failed" = 0 ] && { failed=1; echo "$suite test exited with $rc" >&2; }
done
[ "$failed" -gt 0 ] && status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
