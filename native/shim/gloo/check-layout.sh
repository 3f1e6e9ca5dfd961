#!/bin/sh
# Compiles sizeof(ProcessGroupGloo) and sizeof(ProcessGroupGloo::Options)
# twice, with these stubs and with real gloo headers (Debian: apt-get
# install libgloo-dev), and says whether they agree. Run it after a torch
# upgrade. Needs g++ and the environment of .cache/env.sh ($LIBTORCH).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
real=${GLOO_INCLUDE:-/usr/include}
[ -f "$real/gloo/context.h" ] || { echo "no real gloo headers in $real (apt-get install libgloo-dev, or set GLOO_INCLUDE)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/sizes.cpp" <<'CPP'
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <cstdio>
int main() { std::printf("%zu %zu\n", sizeof(c10d::ProcessGroupGloo), sizeof(c10d::ProcessGroupGloo::Options)); }
CPP
build() {
  g++ -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -DUSE_DISTRIBUTED -DUSE_C10D_GLOO -I"$1" \
    -I"$LIBTORCH/include" -I"$LIBTORCH/include/torch/csrc/api/include" "$tmp/sizes.cpp" -o "$2" \
    -L"$LIBTORCH/lib" -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,--allow-shlib-undefined
}
build "$(dirname "$here")" "$tmp/stub"
build "$real" "$tmp/real"
stub=$(LD_LIBRARY_PATH="$LIBTORCH/lib" "$tmp/stub")
realsz=$(LD_LIBRARY_PATH="$LIBTORCH/lib" "$tmp/real")
echo "sizeof ProcessGroupGloo, Options: stubs $stub, real headers $realsz"
[ "$stub" = "$realsz" ]
