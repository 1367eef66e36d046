"""Small shared helpers: atomic file writes and content hashes."""

from __future__ import annotations

import hashlib
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


def sha256_hex(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()
