#!/bin/sh
# Runs every test suite (Deno's and cargo's), then prints one line
# "N passed, N failed, N skipped" summing them; exits non-zero on any
# failure. Expects the environment of ./selfsup (it calls this script).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
status=0

echo "== cargo test (native/) =="
(cd native && cargo test --release --quiet 2>&1) | tee "$LOG/cargo.txt" || status=1
echo "== deno test (tests/) =="
deno test --allow-all --quiet tests/ 2>&1 | tee "$LOG/deno.txt" || status=1

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
# A suite that crashed before its summary counts as a failure.
grep -q '^test result' "$LOG/cargo.txt" || { failed=$((failed + 1)); echo "cargo test printed no result" >&2; }
strip "$LOG/deno.txt" | grep -Eq '^(ok|FAILED) \|' || { failed=$((failed + 1)); echo "deno test printed no result" >&2; }
[ "$failed" -gt 0 ] && status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
