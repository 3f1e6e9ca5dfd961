#!/bin/sh
# selfsup on SLURM: one task per GPU (or per CPU replica), started by srun.
# Each task is one replica; selfsup reads its place from SLURM itself:
#   rank = SLURM_PROCID, world size = SLURM_NTASKS, GPU = SLURM_LOCALID
#   modulo the GPUs it sees, master = the first node of SLURM_JOB_NODELIST,
#   port = 20000 + job id mod 10000 (or --distributed-port).
#
#   sbatch slurm/run.sh --data-dir /datasets/imagenet --batch-size 4096 --epochs 100
#
# Everything after the script name is passed to `selfsup train`. Adjust
# the #SBATCH lines (or override them on the sbatch command line) for your
# cluster: partition, GPUs, time. Two nodes of 8 GPUs:
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gres=gpu:8 slurm/run.sh ...
#
# CPU only (as the tests do): sbatch --ntasks=2 --gres=none slurm/run.sh --no-cuda ...
#
# The reference's array mode also works (one array element per replica,
# master = the node of element 0, as its slurm/run.sh found it):
#
#   sbatch --array=0-15 --ntasks=1 slurm/run.sh --num-replicas 16 ...
#
# Preemption: SIGUSR1 two minutes before the time limit makes every replica
# finish its step, rank 0 save the last checkpoint and requeue the job; the
# next run resumes from it (docs/RUNS.md).
#
# selfsup is found at $SELFSUP_ROOT, else the folder sbatch was called from
# (or its parent, when called from slurm/). Environment: the submitting
# shell's, as sbatch passes it on by default.
#
# In the container image instead (docker/README.md; like the reference's
# `singularity exec --nv`; not tested here, no apptainer on the test
# machines): SELFSUP_SIF=selfsup.sif [SELFSUP_BIND=/scratch/imagenet:/datasets]
#
#SBATCH --job-name=selfsup
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=4000
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=selfsup-%x-%j.out
set -eu

echo "selfsup job ${SLURM_JOB_ID:-?}: ${SLURM_NTASKS:-1} task(s) on ${SLURM_JOB_NODELIST:-$(hostname)}, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"

# --kill-on-bad-exit: a replica that fails takes the job down at once
# instead of leaving the others to time out in a collective.
if [ -n "${SELFSUP_SIF:-}" ]; then
  runner=$(command -v apptainer || command -v singularity) || {
    echo "slurm/run.sh: SELFSUP_SIF is set but neither apptainer nor singularity is on PATH" >&2
    exit 2
  }
  if [ -n "${SELFSUP_BIND:-}" ]; then
    set -- -B "$SELFSUP_BIND" "$SELFSUP_SIF" selfsup train "$@"
  else
    set -- "$SELFSUP_SIF" selfsup train "$@"
  fi
  exec srun --unbuffered --kill-on-bad-exit=1 --label "$runner" exec --nv "$@"
fi

root=${SELFSUP_ROOT:-${SLURM_SUBMIT_DIR:-.}}
[ -x "$root/selfsup" ] || root="$root/.."
if [ ! -x "$root/selfsup" ]; then
  echo "slurm/run.sh: no selfsup in ${SELFSUP_ROOT:-${SLURM_SUBMIT_DIR:-.}} or its parent; set SELFSUP_ROOT" >&2
  exit 2
fi

# Set up once here (Deno, torch, the native library), not in every task.
"$root/selfsup" version >/dev/null
exec srun --unbuffered --kill-on-bad-exit=1 --label "$root/selfsup" train "$@"
