#!/usr/bin/env bash
# N JAX processes on this machine, talking to each other over localhost.
#
# The way to try a multi-host run without a cluster: every process runs the same command
# with the environment that dnh_jax.parallel.maybe_initialize_distributed() reads
# (DNH_DISTRIBUTED=1, DNH_COORDINATOR, DNH_NUM_PROCESSES, DNH_PROCESS_ID). By default each
# process gets M fake CPU devices and CPU collectives go over gloo, so 2 processes x 2
# devices behave like 2 hosts with 2 accelerators each.
#
# Usage:
#   launch/local.sh [-n PROCESSES] [-d CPU_DEVICES | -g GPUS] [-p PORT] [-l LOG_DIR] \
#       [--] COMMAND [ARGS...]
# Example:
#   launch/local.sh -n 2 -d 2 -- python -m dnh_jax.main \
#       --config=configs/baseline.py:quick --workdir=workdirs/local2x2
#
#   -n PROCESSES   number of processes (default 2)
#   -d CPU_DEVICES fake CPU devices per process (default 2; sets JAX_PLATFORMS=cpu and
#                  XLA_FLAGS=--xla_force_host_platform_device_count=CPU_DEVICES)
#   -g GPUS        use real GPUs instead: process i gets local GPUs i*GPUS .. i*GPUS+GPUS-1
#   -p PORT        coordinator port on 127.0.0.1 (default: a free port chosen here)
#   -l LOG_DIR     where process_<i>.log go (default: a new folder under ${TMPDIR:-/tmp})
#
# Process 0's output is shown here; every process's output is in LOG_DIR/process_<i>.log.
# If any process fails, the others are stopped and this script exits with the failing
# process's status (a dead host must not leave the rest waiting on a collective).
# Ctrl-C / SIGTERM stop all processes.

set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "launch/local.sh: $*" >&2; exit 2; }

num_processes=2
cpu_devices=2
gpus=0
port=""
log_dir=""
while getopts ":n:d:g:p:l:h" opt; do
  case "$opt" in
    n) num_processes="$OPTARG" ;;
    d) cpu_devices="$OPTARG" ;;
    g) gpus="$OPTARG"; cpu_devices=0 ;;
    p) port="$OPTARG" ;;
    l) log_dir="$OPTARG" ;;
    h) usage ;;
    :) die "option -$OPTARG needs a value" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
(($# > 0)) || die "no command given; e.g. launch/local.sh -n 2 -d 2 -- python -m dnh_jax.main --config=configs/baseline.py:quick"
for name in num_processes cpu_devices gpus; do
  [[ "${!name}" =~ ^[0-9]+$ ]] || die "-${name:0:1} must be a non-negative integer, got '${!name}'"
done
((num_processes >= 1)) || die "-n must be at least 1, got $num_processes"
((cpu_devices >= 1 || gpus >= 1)) || die "give -d CPU_DEVICES >= 1 or -g GPUS >= 1"

if [[ -z "$port" ]]; then
  # Bind port 0 and read back what the kernel picked; the socket closes before process 0
  # binds it, which leaves a tiny race, hence -p for a fixed port.
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
[[ "$port" =~ ^[0-9]+$ ]] || die "-p must be a port number, got '$port'"
if [[ -z "$log_dir" ]]; then
  log_dir="$(mktemp -d "${TMPDIR:-/tmp}/dnh_local.XXXXXX")"
fi
mkdir -p "$log_dir"

# XLA_FLAGS: keep the caller's flags but replace any device-count flag with ours.
base_xla_flags="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')"

# Job control: every background process gets its own process group, so stopping a
# process also stops whatever it spawned.
set -m
pids=()
stop_all() {
  local sig="$1" pid
  for pid in "${pids[@]}"; do
    kill "-$sig" -- "-$pid" 2>/dev/null || true
  done
}
on_signal() {
  echo "launch/local.sh: stopping all $num_processes processes" >&2
  stop_all TERM
  sleep 2
  stop_all KILL
  exit 130
}
trap on_signal INT TERM

echo "launch/local.sh: $num_processes processes, coordinator 127.0.0.1:$port, logs in $log_dir" >&2
for ((i = 0; i < num_processes; i++)); do
  env_vars=(DNH_DISTRIBUTED=1 "DNH_COORDINATOR=127.0.0.1:$port"
            "DNH_NUM_PROCESSES=$num_processes" "DNH_PROCESS_ID=$i")
  if ((gpus > 0)); then
    env_vars+=("DNH_LOCAL_DEVICES=$(seq -s, $((i * gpus)) $((i * gpus + gpus - 1)))")
  else
    env_vars+=(JAX_PLATFORMS=cpu
               "XLA_FLAGS=${base_xla_flags} --xla_force_host_platform_device_count=$cpu_devices")
  fi
  env "${env_vars[@]}" "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done

# Show process 0 live; tail exits by itself once process 0 is gone.
tail --pid="${pids[0]}" -n +1 -f "$log_dir/process_0.log" &
tail_pid=$!

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  # Poll rather than `wait -n` (bash >= 5.1 only to learn which process finished).
  still=()
  failed=""
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    set +e
    wait "$pid"
    rc=$?
    set -e
    if ((rc != 0)) && [[ -z "$failed" ]]; then
      failed="$pid"
      status=$rc
    fi
  done
  if [[ -n "$failed" ]]; then
    for ((i = 0; i < num_processes; i++)); do [[ "${pids[$i]}" == "$failed" ]] && break; done
    echo "launch/local.sh: process $i (pid $failed) exited with status $status; stopping the others" >&2
    if ((i != 0)); then
      echo "---- last lines of $log_dir/process_$i.log ----" >&2
      tail -n 30 "$log_dir/process_$i.log" >&2 || true
      echo "----" >&2
    fi
    stop_all TERM
    sleep 2
    stop_all KILL
    break
  fi
  running=("${still[@]+"${still[@]}"}")
  ((${#running[@]} == 0)) || sleep 0.5
done
wait "$tail_pid" 2>/dev/null || true
wait 2>/dev/null || true
echo "launch/local.sh: done (status $status), logs in $log_dir" >&2
exit "$status"
