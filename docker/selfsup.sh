#!/bin/sh
# `selfsup` inside the container image (docker/Dockerfile): the CLI with the
# environment the native library needs, from the dependencies cached in
# the image (no network at run time). Outside a container use ./selfsup.
set -eu
ROOT=/opt/selfsup
# shellcheck source=/dev/null
. "$ROOT/.cache/env.sh"
exec "$ROOT/tools/deno/node_modules/.bin/deno" run --quiet --allow-all --cached-only \
  --config "$ROOT/deno.json" "$ROOT/cli/main.ts" "$@"
