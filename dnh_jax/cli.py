"""What a command-line user sees when a run stops: one readable line, not a traceback.

`one_line_errors` wraps the body of an entry point: an exception becomes `error: <what>`
on stderr and exit status 1, Ctrl-C becomes one line (after the checkpoint is safe, see
`checkpointing.Interrupted`) and status 130. With `--verbosity=1` (or higher) exceptions
propagate with their full traceback, for debugging.
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import flags

_MAX_CHARS = 600


def verbose() -> bool:
  return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1


def one_line(error: BaseException) -> str:
  """The message of `error` on one line (multi-line library messages are joined)."""
  text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
  text = text or type(error).__name__
  if len(text) > _MAX_CHARS:
    text = text[:_MAX_CHARS] + " ..."
  kind = type(error).__name__
  return text if kind in ("ValueError", "ConfigArgError") else f"{kind}: {text}"


@contextlib.contextmanager
def one_line_errors():
  """Turns exceptions escaping the block into one line and an exit status (see above)."""
  try:
    yield
  except KeyboardInterrupt as e:
    message = str(e) if str(e) else "interrupted; rerun to resume"
    print(message if message.startswith("interrupted") else "interrupted; rerun to resume",
          file=sys.stderr, flush=True)
    sys.exit(130)
  except SystemExit:
    raise
  except Exception as e:   # pylint: disable=broad-except
    if verbose():
      raise
    print(f"error: {one_line(e)} (rerun with --verbosity=1 for the traceback)",
          file=sys.stderr, flush=True)
    sys.exit(1)


def load_config(config_flag, flag_name: str = "config"):
  """The parsed config of a `DEFINE_config_file` flag; a missing file is one clear line."""
  from ml_collections import config_flags   # pylint: disable=g-import-not-at-top
  filename = config_flags.get_config_filename(flags.FLAGS[flag_name])
  path = filename.partition(":")[0]
  if not os.path.isfile(path):
    raise ValueError(f"--{flag_name}: config file {path} does not exist (expected e.g. "
                     "configs/baseline.py)")
  return config_flag.value
