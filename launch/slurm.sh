#!/usr/bin/env bash
# SLURM batch script: one dnh_jax training job over several GPU nodes.
#
# Submit from the repository root (arguments go to `python -m dnh_jax.main`):
#   sbatch launch/slurm.sh --config=configs/baseline.py:bits=64 --workdir=/shared/dnh/baseline64
# Resubmitting the same command resumes from <workdir>/checkpoints (the workdir must be on a
# file system every node sees).
#
# Layout: by default one task per GPU (2 nodes x 4 GPUs = 8 processes). Every task sees
# all GPUs of its node and JAX's SLURM detection gives it GPU $SLURM_LOCALID. For one
# task per node, set --ntasks-per-node=1: this script then hands the task every GPU of the
# node (DNH_LOCAL_DEVICES), since the detection alone would pin it to GPU 0. If your site
# binds one GPU per task (--gpus-per-task=1, so each task sees a single GPU), that is
# handled too.
#
# What to change for a site: the #SBATCH lines (partition, account, nodes, GPUs per node,
# time), and these variables (environment of `sbatch`, or edit the defaults below):
#   DNH_SETUP   shell code run on every node first, e.g.
#               "module load cuda/12.4; source /shared/venvs/dnh/bin/activate"
#   DNH_PYTHON  the Python to run (default: python on PATH after DNH_SETUP)
#   DNH_DATA_DIR  shared TFDS data folder (default ~/.cache/dnh_jax/tfds)
#   JAX_COORDINATOR_PORT  coordinator port on the first node (default: derived from the
#               job id by JAX)
#
#SBATCH --job-name=dnh_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
##SBATCH --partition=gpu
##SBATCH --account=my_account

set -euo pipefail

die() { echo "launch/slurm.sh: $*" >&2; exit 2; }
(($# > 0)) || die "usage: sbatch launch/slurm.sh --config=configs/<name>.py[:args] [--workdir=DIR]"
[[ -n "${SLURM_JOB_ID:-}" ]] || die "not inside a SLURM job; submit it with sbatch (or salloc, then bash launch/slurm.sh ...)"

cd "${SLURM_SUBMIT_DIR:-$PWD}"
export DNH_SETUP="${DNH_SETUP:-}"
export DNH_PYTHON="${DNH_PYTHON:-python}"
# Tasks per node: as requested, else the job's tasks spread evenly over its nodes.
export DNH_TASKS_PER_NODE="${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / ${SLURM_JOB_NUM_NODES:-1} ))}"
export DNH_GPUS_ON_NODE="${SLURM_GPUS_ON_NODE:-0}"

echo "launch/slurm.sh: job $SLURM_JOB_ID, ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-?} nodes ($SLURM_JOB_NODELIST), $DNH_TASKS_PER_NODE per node, $DNH_GPUS_ON_NODE GPUs per node" >&2

# Per task: site set-up, pick the GPUs, then the trainer. DNH_DISTRIBUTED=1 makes
# dnh_jax.parallel call jax.distributed.initialize(), which reads SLURM_* itself
# (coordinator = first node of the step, process id = SLURM_PROCID). --kill-on-bad-exit
# stops every task as soon as one fails, instead of leaving them blocked in a collective.
srun --kill-on-bad-exit=1 bash -c '
  set -euo pipefail
  eval "$DNH_SETUP"
  visible="${CUDA_VISIBLE_DEVICES:-}"
  n_visible=0
  [[ -n "$visible" ]] && n_visible=$(awk -F, "{print NF}" <<<"$visible")
  if [[ -z "${DNH_LOCAL_DEVICES:-}" ]]; then
    if ((DNH_TASKS_PER_NODE == 1 && DNH_GPUS_ON_NODE > 1)); then
      export DNH_LOCAL_DEVICES=$(seq -s, 0 $((DNH_GPUS_ON_NODE - 1)))
    elif ((n_visible == 1)); then
      export DNH_LOCAL_DEVICES=0   # the site bound one GPU to this task
    fi
  fi
  export DNH_DISTRIBUTED=1
  exec "$DNH_PYTHON" -m dnh_jax.main "$@"
' dnh_task "$@"
