"""Multi-process runs through the launchers in launch/, on fake CPU devices over gloo.

The equality test runs `configs/baseline.py:quick` (shrunk further by --config.* flags)
as one process with four devices and as two processes with two devices each, through
launch/local.sh, and compares the final parameters and results. Then one of two
processes is killed right after the step-2 checkpoint is written (the launcher stops the
other), and the run is restarted through launch/slurm.sh under a stand-in `srun`, as a
resubmitted cluster job would be: it must resume at step 2 and end with the parameters
and metrics of the uninterrupted two-process run.

Run as a script, this file is the worker for the kill: `python tests/test_multiprocess.py
--crash_after_step=N <dnh_jax.main flags>` is dnh_jax.main with process 1 killed
(SIGKILL) once the step-N checkpoint is on disk.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_SH = os.path.join(REPO, "launch", "local.sh")
SLURM_SH = os.path.join(REPO, "launch", "slurm.sh")
TPU_SH = os.path.join(REPO, "launch", "tpu_vm.sh")

STEPS = 4
# baseline.py:quick with a few hundred images and four steps of 16: the run is dominated by
# process start-up and compilation, not by training.
OVERRIDES = (
    "--config.data.num_examples=400",
    f"--config.train.steps={STEPS}",
    "--config.train.batch_size=16",
    "--config.train.warmup_steps=0",
    "--config.train.log_every=1",
    f"--config.train.eval_every={STEPS}",
    "--config.train.checkpoint_every=2",
    "--config.eval.batch_size=64",
)
CONFIG = "--config=" + os.path.join(REPO, "configs", "baseline.py") + ":quick"
# Equality tolerances between 1 x 4 and 2 x 2 devices: the programs are the same SPMD
# program; only the cross-process all-reduce (gloo) may sum in another order.
PARAM_RTOL, PARAM_ATOL = 1e-5, 1e-6
METRIC_ATOL = 1e-6


def _env(**extra) -> dict:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)   # the launcher sets the device count per process
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for every run of this module: identical programs (the
  restarted run, the second process) are compiled once, which halves the test's time."""
  saved = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR",
                                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla_cache"))
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  yield
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


def _launch(tmp_path, name, *, processes, devices, worker=()):
  """Runs dnh_jax.main (or this file as worker) through launch/local.sh."""
  workdir = tmp_path / name
  command = [sys.executable, *(worker or ("-m", "dnh_jax.main")), CONFIG, *OVERRIDES,
             f"--workdir={workdir}"]
  log_dir = tmp_path / f"{name}_logs"
  proc = subprocess.run(
      [LOCAL_SH, "-n", str(processes), "-d", str(devices), "-l", str(log_dir), "--",
       *command], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
  logs = {p.name: p.read_text() for p in sorted(log_dir.glob("process_*.log"))}
  return proc, workdir, logs


def _params(workdir, step):
  """The trained parameters of a checkpoint, restored onto this process's first device
  (the checkpoint may come from another topology, e.g. two processes)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "checkpoints", "last", str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        getattr(metadata, "item_metadata", metadata))
  return jax.tree.map(np.asarray, checkpointer.restore(path, target)["params"])


def _max_differences(a, b):
  """(max |a - b|, max |a - b| / (|b| + 1e-12)) over every leaf of two param trees."""
  import jax  # pylint: disable=g-import-not-at-top
  abs_d = max(float(np.max(np.abs(x - y))) for x, y in
              zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  rel_d = max(float(np.max(np.abs(x - y) / (np.abs(y) + 1e-12))) for x, y in
              zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return abs_d, rel_d


def _metrics(workdir):
  results = json.load(open(workdir / "results.json"))
  return {k: v for k, v in results.items() if k != "train/seconds"}


def _assert_ok(proc, logs):
  assert proc.returncode == 0, (proc.stderr[-3000:], {k: v[-3000:] for k, v in logs.items()})


def test_two_processes_match_one_process_and_resume_after_a_kill(tmp_path):
  t0 = time.time()
  one, one_dir, one_logs = _launch(tmp_path, "one", processes=1, devices=4)
  _assert_ok(one, one_logs)
  two, two_dir, two_logs = _launch(tmp_path, "two", processes=2, devices=2)
  _assert_ok(two, two_logs)

  # Same parameters (within the all-reduce tolerance) and the same metrics.
  a, b = _params(two_dir, STEPS), _params(one_dir, STEPS)
  abs_d, rel_d = _max_differences(a, b)
  print(f"1x4 vs 2x2 devices after {STEPS} steps: max |dparam| = {abs_d:.3g}, "
        f"max relative = {rel_d:.3g}")
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=PARAM_RTOL,
                                                       atol=PARAM_ATOL), a, b)
  m_one, m_two = _metrics(one_dir), _metrics(two_dir)
  assert sorted(m_one) == sorted(m_two)
  worst = max(abs(m_one[k] - m_two[k]) for k in m_one)
  print(f"1x4 vs 2x2 devices: {len(m_one)} results, max |difference| = {worst:.3g}")
  assert worst <= METRIC_ATOL, {k: (m_one[k], m_two[k]) for k in m_one
                                if abs(m_one[k] - m_two[k]) > METRIC_ATOL}
  assert m_two["test/mAP@100"] > 0.0

  # Two processes really ran, and only process 0 wrote metrics and logged progress.
  assert set(two_logs) == {"process_0.log", "process_1.log"}
  # Progress is printed by process 0 only (every process may still log through absl).
  printed = lambda log: re.search(r"^step 4/4 \|", log, re.MULTILINE)
  assert printed(two_logs["process_0.log"]) and not printed(two_logs["process_1.log"])
  rows = [json.loads(l) for l in open(two_dir / "logs" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))

  # Kill process 1 right after the step-2 checkpoints; the launcher stops process 0.
  crash, crash_dir, crash_logs = _launch(
      tmp_path, "resumed", processes=2, devices=2,
      worker=(os.path.abspath(__file__), "--crash_after_step=2"))
  assert crash.returncode != 0, crash.stderr[-2000:]
  assert "exited with status" in crash.stderr
  assert (crash_dir / "checkpoints" / "last" / "2").is_dir()
  assert not (crash_dir / "checkpoints" / "last" / "4").exists()
  assert not (crash_dir / "results.json").exists()
  # Restarted - as a resubmitted cluster job: through launch/slurm.sh under a stand-in
  # srun - the same run resumes at step 2 and ends where the uninterrupted run did.
  again, again_dir, again_logs = _slurm(tmp_path, "resumed")
  _assert_ok(again, again_logs)
  assert "launch/slurm.sh: job 4242, 2 tasks on 1 nodes" in again.stderr
  # Both tasks joined one runtime found from the SLURM variables alone.
  assert "process 0 of 2" in again_logs["task_0.log"]
  assert "process 1 of 2" in again_logs["task_1.log"]
  assert "at step 2" in again_logs["task_0.log"], again_logs["task_0.log"][-2000:]
  assert not re.search(r"^step [12]/4 \|", again_logs["task_0.log"], re.MULTILINE)
  abs_d, rel_d = _max_differences(_params(again_dir, STEPS), a)
  print(f"killed at step 2 and resumed vs uninterrupted (2x2): max |dparam| = {abs_d:.3g}")
  assert abs_d == 0.0
  m_again = _metrics(again_dir)
  assert {k: m_again[k] for k in m_two} == m_two
  print(f"multi-process test: {time.time() - t0:.1f} s")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _slurm(tmp_path, name):
  """Runs dnh_jax.main through launch/slurm.sh as a 2-task job, 2 CPU devices per task.

  A stand-in `srun` starts the tasks here with the per-task SLURM variables, so the
  script runs end to end: per-task environment, then JAX's SLURM auto-detection of the
  coordinator and process ids.
  """
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  srun = bin_dir / "srun"
  srun.write_text(
      "#!/usr/bin/env bash\n"
      "# Stand-in for srun: SLURM_NTASKS copies of the command here, with per-task ids.\n"
      '[[ "$1" == --kill-on-bad-exit=1 ]] || { echo "srun: expected --kill-on-bad-exit=1"'
      " >&2; exit 2; }\nshift\npids=()\n"
      'for ((i = 0; i < SLURM_NTASKS; i++)); do\n'
      '  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost '
      'SLURM_STEP_NUM_NODES=1 "$@" > "$SRUN_LOG_DIR/task_$i.log" 2>&1 &\n'
      '  pids+=($!)\ndone\nrc=0\nfor p in "${pids[@]}"; do wait "$p" || rc=$?; done\n'
      'exit $rc\n')
  srun.chmod(0o755)
  log_dir = tmp_path / f"{name}_slurm_logs"
  log_dir.mkdir()
  workdir = tmp_path / name
  env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SRUN_LOG_DIR=str(log_dir),
             SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2",
             SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost",
             SLURM_SUBMIT_DIR=REPO, JAX_COORDINATOR_PORT=str(_free_port()),
             DNH_PYTHON=sys.executable, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  proc = subprocess.run(["bash", SLURM_SH, CONFIG, *OVERRIDES, f"--workdir={workdir}"],
                        cwd=str(tmp_path), env=env, capture_output=True, text=True,
                        timeout=240)
  logs = {p.name: p.read_text() for p in sorted(log_dir.glob("*.log"))}
  return proc, workdir, logs


def test_launchers_reject_bad_usage(tmp_path):
  env = _env()
  for cmd, message in (
      ([LOCAL_SH, "-n", "2"], "no command given"),
      ([LOCAL_SH, "-n", "x", "--", "true"], "-n must be a non-negative integer"),
      ([LOCAL_SH, "-n", "2", "-d", "0", "--", "true"], "give -d CPU_DEVICES"),
      (["bash", SLURM_SH, CONFIG], "not inside a SLURM job"),
      ([TPU_SH, "my-tpu"], "usage: launch/tpu_vm.sh"),
  ):
    env_here = dict(env)
    env_here.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(cmd, env=env_here, capture_output=True, text=True, timeout=30,
                          cwd=str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr, (cmd, proc.stderr)


def test_local_launcher_stops_everything_when_one_process_fails(tmp_path):
  # Process 1 fails at once; process 0 would sleep for a minute unless stopped.
  script = ("import os, sys, time\n"
            "if os.environ['DNH_PROCESS_ID'] == '1': sys.exit(7)\n"
            "time.sleep(60)\n")
  t0 = time.time()
  proc = subprocess.run([LOCAL_SH, "-n", "2", "-d", "1", "-l", str(tmp_path / "logs"), "--",
                         sys.executable, "-c", script], env=_env(), capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 7, proc.stderr
  assert "process 1" in proc.stderr and "stopping the others" in proc.stderr
  assert time.time() - t0 < 20


def test_tpu_launcher_runs_the_same_quoted_command_on_every_worker(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "gcloud_args.json"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
  gcloud.chmod(0o755)
  env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             DNH_SETUP="source ~/venv/bin/activate")
  proc = subprocess.run([TPU_SH, "-p", "proj", "my-tpu", "us-central2-b", "--",
                         "--config=configs/baseline.py:bits=64,quick", "--workdir=/mnt/a b"],
                        env=env, capture_output=True, text=True, timeout=30)
  assert proc.returncode == 0, proc.stderr
  args = json.load(open(record))
  assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in args and args[args.index("--project") + 1] == "proj"
  remote = args[args.index("--command") + 1]
  # The remote shell must see exactly the two arguments given here.
  quoted_args = remote.split("python3 -m dnh_jax.main", 1)[1].split(" 2>&1")[0]
  probe = subprocess.run(["bash", "-c", "printf '%s\\n'" + quoted_args],
                         capture_output=True, text=True)
  assert probe.stdout.splitlines() == ["--config=configs/baseline.py:bits=64,quick",
                                       "--workdir=/mnt/a b"]
  assert "DNH_DISTRIBUTED=1" in remote and remote.index("source ~/venv") < remote.index(
      "dnh_jax.main")


def test_distributed_start_only_when_asked_and_loud_on_bad_settings(monkeypatch):
  from dnh_jax import parallel  # pylint: disable=g-import-not-at-top
  for name in ("DNH_DISTRIBUTED", "DNH_COORDINATOR", "DNH_NUM_PROCESSES", "DNH_PROCESS_ID",
               "DNH_LOCAL_DEVICES"):
    monkeypatch.delenv(name, raising=False)
  assert parallel.maybe_initialize_distributed() is False
  monkeypatch.setenv("DNH_DISTRIBUTED", "0")
  assert parallel.maybe_initialize_distributed() is False
  monkeypatch.setenv("DNH_DISTRIBUTED", "maybe")
  with pytest.raises(ValueError, match="DNH_DISTRIBUTED='maybe'"):
    parallel.maybe_initialize_distributed()
  monkeypatch.setenv("DNH_DISTRIBUTED", "1")
  monkeypatch.setenv("DNH_COORDINATOR", "127.0.0.1:1")
  with pytest.raises(ValueError, match="DNH_NUM_PROCESSES"):
    parallel.maybe_initialize_distributed()
  monkeypatch.setenv("DNH_NUM_PROCESSES", "2")
  monkeypatch.setenv("DNH_PROCESS_ID", "2")
  with pytest.raises(ValueError, match=r"DNH_PROCESS_ID=2 must be in \[0, "):
    parallel.maybe_initialize_distributed()
  monkeypatch.setenv("DNH_PROCESS_ID", "one")
  with pytest.raises(ValueError, match="DNH_PROCESS_ID must be an integer"):
    parallel.maybe_initialize_distributed()


def _crash_worker(argv):
  """dnh_jax.main, but process 1 is SIGKILLed once step N's checkpoints are on disk."""
  crash_step = int(argv.pop(1).split("=", 1)[1])
  from absl import app  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from dnh_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from dnh_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  save_last = checkpointing.Checkpoints.save_last

  def save_last_then_crash(self, step, state):
    save_last(self, step, state)
    if step == crash_step:
      # Both processes finish writing, then meet, so the kill cannot cut a write short.
      self.wait()
      multihost_utils.sync_global_devices("checkpoint written")
      if jax.process_index() == 1:
        print(f"test worker: killing process 1 after step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

  checkpointing.Checkpoints.save_last = save_last_then_crash
  app.run(main_lib.main, argv=argv)


if __name__ == "__main__":
  _crash_worker(list(sys.argv))
