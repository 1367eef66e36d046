#!/usr/bin/env bash
# Runs the same dnh_jax command on every worker of a Cloud TPU VM slice.
#
# Usage (from the repository root of a checkout on your workstation):
#   launch/tpu_vm.sh [-s] [-p PROJECT] TPU_NAME ZONE -- ARGS...
# Example (v4-32 slice: 4 workers x 4 chips):
#   launch/tpu_vm.sh -s my-v4-32 us-central2-b -- \
#       --config=configs/baseline.py:bits=64 --workdir=/mnt/shared/dnh/baseline64
#
#   -s          first copy this checkout (`git archive HEAD`, so commit first) to every
#               worker, into $DNH_REMOTE_DIR
#   -p PROJECT  Google Cloud project (default: gcloud's configured project)
#   ARGS        arguments of `python -m dnh_jax.main`
#
# Every worker runs `DNH_DISTRIBUTED=1 python -m dnh_jax.main ARGS` in $DNH_REMOTE_DIR;
# jax.distributed.initialize() finds the slice's workers from the TPU metadata by itself.
# Each worker's output is also written to $DNH_REMOTE_DIR/tpu_logs/<hostname>.log there.
#
# What to change for a site (environment variables):
#   DNH_REMOTE_DIR  checkout folder on the workers (default: dnh_jax, in the home folder)
#   DNH_SETUP       shell code run first on every worker, e.g.
#                   "source ~/venv/bin/activate" (install requirements.txt and jax[tpu]
#                   there once, e.g. with -s and a first command that runs pip)
#   DNH_PYTHON      the Python to run (default: python3)
# The --workdir must be a folder every worker sees (a Filestore NFS or gcsfuse mount):
# Orbax writes one checkpoint from all workers together and every worker restores it.

set -euo pipefail

die() { echo "launch/tpu_vm.sh: $*" >&2; exit 2; }
usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

sync=0
project=()
while getopts ":sp:h" opt; do
  case "$opt" in
    s) sync=1 ;;
    p) project=(--project "$OPTARG") ;;
    h) usage ;;
    :) die "option -$OPTARG needs a value" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
(($# >= 2)) || die "usage: launch/tpu_vm.sh [-s] [-p PROJECT] TPU_NAME ZONE -- ARGS..."
tpu="$1"
zone="$2"
shift 2
[[ "${1:-}" == "--" ]] && shift
(($# > 0)) || die "no arguments for dnh_jax.main given (at least --config=...)"
command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk)"

remote_dir="${DNH_REMOTE_DIR:-dnh_jax}"
python="${DNH_PYTHON:-python3}"
tpu_flags=(--zone "$zone" "${project[@]+"${project[@]}"}" --worker=all)

if ((sync)); then
  git rev-parse --show-toplevel >/dev/null 2>&1 || die "-s needs a git checkout"
  archive="$(mktemp "${TMPDIR:-/tmp}/dnh_jax.XXXXXX.tar.gz")"
  trap 'rm -f "$archive"' EXIT
  git archive --format=tar.gz -o "$archive" HEAD
  echo "launch/tpu_vm.sh: copying $(git rev-parse --short HEAD) to $tpu:$remote_dir on all workers" >&2
  gcloud compute tpus tpu-vm scp "$archive" "$tpu:dnh_jax_src.tar.gz" "${tpu_flags[@]}"
  gcloud compute tpus tpu-vm ssh "$tpu" "${tpu_flags[@]}" --command \
      "mkdir -p $(printf '%q' "$remote_dir") && tar -xzf dnh_jax_src.tar.gz -C $(printf '%q' "$remote_dir") && rm dnh_jax_src.tar.gz"
fi

# The remote command, every argument quoted for the remote shell.
args="$(printf ' %q' "$@")"
remote="set -o pipefail; cd $(printf '%q' "$remote_dir") && ${DNH_SETUP:+$DNH_SETUP && }"
remote+="mkdir -p tpu_logs && DNH_DISTRIBUTED=1 $(printf '%q' "$python") -m dnh_jax.main${args}"
remote+=" 2>&1 | tee tpu_logs/\$(hostname).log"
echo "launch/tpu_vm.sh: on every worker of $tpu: $remote" >&2
exec gcloud compute tpus tpu-vm ssh "$tpu" "${tpu_flags[@]}" --command "$remote"
