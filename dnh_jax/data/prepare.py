"""Builds (or verifies) the configured dataset without training: a login-node step.

    python -m dnh_jax.data.prepare --config=configs/<name>.py
        [--config.data.name=dicom --config.data.manual_dir=DIR --config.data.label_map=F]

Builds the dataset of `config.data` into the TFDS data_dir (`config.data.data_dir`,
$DNH_DATA_DIR or ~/.cache/dnh_jax/tfds), or finds the complete copy already there, then
prints where it is, its example count and, for archives read file by file (DICOM), the
ingest summary and the path of `ingest_report.json`. Exit status 0 when the build
completed (also when files were skipped), 1 with one line of error otherwise.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dnh_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/baseline.py:quick.",
    lock_config=True)
flags.mark_flags_as_required(["config"])


def prepare(config) -> str:
  """Builds or verifies `config.data`; returns the lines to print."""
  from dnh_jax.data.pipeline import default_data_dir   # pylint: disable=g-import-not-at-top
  from dnh_jax.data import ingest_report   # pylint: disable=g-import-not-at-top
  from dnh_jax.data.builders import base, get_builder   # pylint: disable=g-import-not-at-top
  builder = get_builder(config.data, default_data_dir(config.data))
  found = base.is_prepared(builder)
  builder = base.prepare(builder, expected_examples=builder.params.get("num_examples"))
  count = builder.info.splits[base.SPLIT].num_examples
  lines = [f"Dataset {config.data.name!r}: {count} examples "
           f"{'(already built, verified)' if found else '(built)'} in {builder.data_path}"]
  report = ingest_report.report_path(builder.data_path)
  if os.path.exists(report):
    if found:   # a fresh build printed its summary already
      lines.append(ingest_report.format_summary(ingest_report.read(report)["summary"],
                                                report))
    else:
      lines.append(f"Ingest report: {report}")
  return "\n".join(lines)


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with cli.one_line_errors():
    print(prepare(cli.load_config(_CONFIG)), flush=True)


if __name__ == "__main__":
  app.run(main)
