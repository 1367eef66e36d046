"""Small shared helpers: atomic file writes and the ETA format of progress lines."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
  """Calls `write(file)` on a temporary file in `path`'s folder, then renames it to `path`.

  A reader never sees a half-written file, and a crash leaves the old file intact.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (see `atomic_write`)."""
  atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
  """JSON with sorted keys and indentation, written atomically."""
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def format_eta(seconds: float) -> str:
  """Seconds left as "12m05s", or "3h07m" from an hour on (progress lines)."""
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
      f"{seconds // 60}m{seconds % 60:02d}s")
