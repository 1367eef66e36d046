"""`python -m dnh_jax.report --workdir=W [--checkpoint=best|last|STEP]`: writes
`<workdir>/report.html` and its figures (see dnh_jax/report/run_report.py)."""

import argparse
import logging
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m dnh_jax.report", allow_abbrev=False,
                              description=__doc__)
  p.add_argument("--workdir", required=True, help="workdir of a training run")
  p.add_argument("--checkpoint", default="best", help="best | last | STEP")
  args = p.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  from dnh_jax.report import run_report  # pylint: disable=g-import-not-at-top
  try:
    run_report.build_report(args.workdir, checkpoint=args.checkpoint)
  except (ValueError, FileNotFoundError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
