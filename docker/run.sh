#!/usr/bin/env bash
# Runs a command in the selfsup image, as the reference's docker/run.sh
# does, but with the command kept whole (one string, run by `sh -c` in
# the container) and today's GPU flag:
#
#   docker/run.sh "<command>" [gpu] [port]
#
#   command  what to run, as one string, e.g.
#            "selfsup train --data-dir /datasets/imagenet --model-dir /models --num-replicas 1"
#   gpu      GPU index or list (0, 0,1), all, or none for the CPU (default: 0)
#   port     publish this port too, for TensorBoard or visdom; 0: none (default: 0)
#
# Mounts (created when missing): $SELFSUP_DATA (default ~/datasets) at
# /datasets, read-only; $SELFSUP_MODELS (default ~/models) at /models; the
# current folder ($SELFSUP_WORKDIR) at /workspace, the working directory,
# so runs/ and .models/ land there. The container runs as the calling
# user, so what it writes belongs to them. Image: $SELFSUP_IMAGE (default
# selfsup:latest, built from docker/Dockerfile; see docker/README.md).
set -euo pipefail

die() {
  printf 'docker/run.sh: %s\n' "$1" >&2
  exit 2
}

if [ $# -lt 1 ] || [ $# -gt 3 ]; then die "usage: docker/run.sh \"<command>\" [gpu=0] [port=0]"; fi
cmd=$1
gpu=${2:-0}
port=${3:-0}
image=${SELFSUP_IMAGE:-selfsup:latest}
data=${SELFSUP_DATA:-$HOME/datasets}
models=${SELFSUP_MODELS:-$HOME/models}
work=${SELFSUP_WORKDIR:-$PWD}

[ -n "$cmd" ] || die "the command is empty; give it as one quoted string"
# Docker would create missing mount points as root-owned folders.
mkdir -p "$data" "$models" "$work"

args=(
  run --rm --init --ipc=host
  --user "$(id -u):$(id -g)" -e HOME=/tmp
  -v "$data:/datasets:ro"
  -v "$models:/models"
  -v "$work:/workspace" -w /workspace
)
case $gpu in
  none | cpu) ;;
  all) args+=(--gpus all) ;;
  *)
    [[ $gpu =~ ^[0-9]+(,[0-9]+)*$ ]] || die "gpu must be an index or list (0, 0,1), all or none; got '$gpu'"
    # A list needs the inner quotes: --gpus '"device=0,1"'.
    args+=(--gpus "\"device=$gpu\"")
    ;;
esac
if [ "$port" != 0 ]; then
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -gt 65535 ]; then die "port must be a number up to 65535; got '$port'"; fi
  args+=(-p "$port:$port")
fi
# A terminal only when there is one: scripts and CI have none.
if [ -t 0 ] && [ -t 1 ]; then args+=(-it); fi

exec docker "${args[@]}" "$image" sh -c "$cmd"
