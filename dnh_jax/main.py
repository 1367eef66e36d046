"""Entry point: `python -m dnh_jax.main --config=configs/<name>.py[:args] [--workdir=DIR]`.

Parses flags, starts the multi-host runtime when a launcher asks for it, logs the devices,
runs `train.train_and_evaluate` and prints the results table. Without --workdir the run
goes to `workdirs/<name>` (`workdirs/<name>-<args>` when the config has arguments), so a
rerun of the same command resumes instead of starting over. Errors are one line
(`dnh_jax.cli`; the traceback with --verbosity=1).
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dnh_jax import cli
from dnh_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/untrained_combo.py:quick.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default workdirs/<name>).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if not flags.FLAGS["verbosity"].present:  # progress lines are printed; library INFO is noise
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with cli.one_line_errors():
    _run(cli.load_config(_CONFIG))   # the config first: a bad one creates nothing


def _run(config):
  # Imported here so XLA_FLAGS / JAX_PLATFORMS set by a launcher apply first.
  import jax  # pylint: disable=g-import-not-at-top
  from dnh_jax import parallel, train  # pylint: disable=g-import-not-at-top
  from dnh_jax.report import tables  # pylint: disable=g-import-not-at-top

  parallel.maybe_initialize_distributed()
  config_arg = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or config_lib.default_workdir(config_arg)
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  from dnh_jax.report import run_report  # pylint: disable=g-import-not-at-top
  # The run report (config.report.html) at the end; it never fails the run.
  results = train.train_and_evaluate(config, workdir, after_run=run_report.write_after_run)
  if "stopped_at_step" in results:
    print(f"Stopped at step {int(results['stopped_at_step'])}; rerun the command to resume.")
    return
  if jax.process_index() == 0:
    if config.report.table == "held_out":
      from dnh_jax.report import untrained_combo  # pylint: disable=g-import-not-at-top
      print(untrained_combo.held_out_table(results, knn=config.eval.subcode_knn or None))
    else:
      print(tables.results_table(results))
    print(f"Results written to {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
  app.run(main)
