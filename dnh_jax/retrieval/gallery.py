"""Building a `GalleryIndex` with a trained model, from a folder of images or a dataset split.

Folders are read recursively: PNG, JPEG, BMP, TIFF, NPY and DICOM files, converted exactly
as the dataset builders convert images (`dnh_jax.data.images.load_image` at the model's
image size). Labels come from a `<modality>/<organ>/<disease>/[...]` layout below the root
when the folder names match the schema's vocabularies (the `image_folder` builder's rules,
"normal" included); other images are unlabelled (-1). A file that cannot be read is
skipped and reported with its reason; it never stops the build.

Appending (`append=` an existing index) encodes only files (or dataset ids) not already in
the index and refuses an index built by another model.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Sequence, TextIO

import numpy as np

from dnh_jax.data import images as images_lib
from dnh_jax.data.builders import image_folder
from dnh_jax.data.schema import MULTI, Schema
from dnh_jax.retrieval.codes import pack_codes
from dnh_jax.retrieval.index import GalleryIndex

FOLDER_CHARACTERISTICS = ("modality", "organ", "disease")


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return (f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600
          else f"{seconds // 60}m{seconds % 60:02d}s")


class Progress:
  """Prints `what: done/total (rate items/s, ETA)` at most every `every` seconds."""

  def __init__(self, total: int, what: str, out: TextIO | None = None, every: float = 2.0):
    self.total, self.what, self.out, self.every = total, what, out or sys.stderr, every
    self.start = self.last = time.time()
    self.shown = -1

  def rate(self, done: int) -> float:
    return done / max(time.time() - self.start, 1e-9)

  def update(self, done: int, force: bool = False):
    now = time.time()
    if (not force and now - self.last < self.every) or done == self.shown:
      return
    self.last, self.shown = now, done
    rate = self.rate(done)
    eta = format_eta((self.total - done) / rate) if rate > 0 else "?"
    print(f"{self.what}: {done}/{self.total} ({rate:.1f} items/s, ETA {eta})",
          file=self.out, flush=True)


def unknown_labels(schema: Schema, n: int) -> dict[str, np.ndarray]:
  """Labels of n unlabelled items: -1 (single-label), all 255 (multi-label)."""
  return {c.name: (np.full((n, c.size), 255, np.uint8) if c.kind == MULTI
                   else np.full(n, -1, np.int32)) for c in schema.characteristics}


def folder_labels(folders: Sequence[str], schema: Schema) -> dict[str, int] | None:
  """Label ids from folder names (modality, organ, disease), or None if they do not match."""
  if len(folders) < 3 or not set(FOLDER_CHARACTERISTICS) <= set(schema.names):
    return None
  modality, organ, disease = folders[:3]
  try:
    m = image_folder._match(modality, schema["modality"].vocabulary, "modality", "")  # pylint: disable=protected-access
    o = image_folder._match(organ, schema["organ"].vocabulary, "organ", "")  # pylint: disable=protected-access
    d = image_folder._match_disease(disease, o, "")  # pylint: disable=protected-access
    return {"modality": schema["modality"].index(m), "organ": schema["organ"].index(o),
            "disease": schema["disease"].index(d)}
  except (ValueError, KeyError):
    return None


def path_labels(path: str, schema: Schema) -> dict[str, int] | None:
  """Labels of a query file from its last folders (`.../<modality>/<organ>/<disease>/f`,
  or one patient folder deeper), or None."""
  parents = os.path.abspath(path).split(os.sep)[:-1]
  for end in (len(parents), len(parents) - 1):
    if end >= 3:
      found = folder_labels(parents[end - 3:end], schema)
      if found is not None:
        return found
  return None


def scan_folder(root: str) -> tuple[list[tuple[str, dict | None]], list[tuple[str, str]],
                                    list[tuple[str, ...]]]:
  """Image files below `root` (sorted, hidden ones ignored).

  Returns:
    (files [(path, None)], skipped [(path, reason)] for other extensions,
     folders [relative folder parts of each file]).
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--images={root}: not a folder")
  files, skipped, folders = [], [], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    rel = os.path.relpath(dirpath, root)
    parts = () if rel == "." else tuple(rel.split(os.sep))
    for name in sorted(filenames):
      if name.startswith("."):
        continue
      path = os.path.abspath(os.path.join(dirpath, name))
      ext = os.path.splitext(name)[1].lower()
      if ext not in images_lib.IMAGE_EXTENSIONS:
        skipped.append((path, f"unsupported extension {ext!r}"))
        continue
      files.append((path, None))
      folders.append(parts)
  return files, skipped, folders


@dataclasses.dataclass
class BuildReport:
  """What a build did: items added, already present, skipped (path, reason), speed."""

  added: int = 0
  already_present: int = 0
  skipped: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def summary(self) -> str:
    rate = self.added / max(self.seconds, 1e-9)
    lines = [f"added {self.added} items ({rate:.1f} images/s), "
             f"{self.already_present} already in the index, {len(self.skipped)} skipped"]
    lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
    return "\n".join(lines)


def _encode_stream(retriever, count: int, load: Callable[[int], np.ndarray],
                   report: BuildReport, progress: Progress, names: Sequence[str]):
  """Encodes items 0..count-1 in batches; load(i) -> uint8[S, S, 1] or raises ValueError.

  Returns (kept positions, packed codes uint32[M, W], thumbnails uint8[M, S, S]).
  """
  kept, codes, thumbs = [], [], []
  b = retriever.batch_size
  for start in range(0, count, b):
    batch, batch_pos = [], []
    for i in range(start, min(start + b, count)):
      try:
        batch.append(load(i))
        batch_pos.append(i)
      except (ValueError, OSError) as e:  # unreadable: reported at the end
        reason = " ".join(str(e).split())
        # Readers name the file in their message; the report names it once.
        report.skipped.append((names[i], reason.removeprefix(f"{names[i]}: ")))
    if batch:
      images = np.stack(batch)
      codes.append(pack_codes(retriever.encode(images)))
      thumbs.append(images[..., 0])
      kept += batch_pos
    progress.update(min(start + b, count))
  progress.update(count, force=True)
  if not codes:
    return [], None, None
  return kept, np.concatenate(codes), np.concatenate(thumbs)


def _new_index(retriever, codes, ids, labels, paths, thumbs) -> GalleryIndex:
  return GalleryIndex(codes=codes, ids=ids, labels=labels, num_bits=int(retriever.config.model.bits),
                      segments=retriever.segments, schema=retriever.schema,
                      fingerprints=retriever.fingerprints, paths=paths, thumbnails=thumbs)


def merge(old: GalleryIndex | None, new: GalleryIndex | None) -> GalleryIndex:
  """`old` followed by `new` (same model; the builder checks it)."""
  if old is None or not len(old):
    return new if new is not None else old
  if new is None or not len(new):
    return old
  clash = np.intersect1d(old.ids, new.ids)
  if clash.size:
    raise ValueError(f"--append: item ids {clash[:5].tolist()} are already in the index")
  cat = lambda a, b: None if a is None or b is None else np.concatenate([a, b])
  return dataclasses.replace(
      old, codes=np.concatenate([old.codes, new.codes]), ids=np.concatenate([old.ids, new.ids]),
      labels={k: np.concatenate([v, new.labels[k]]) for k, v in old.labels.items()},
      paths=cat(old.paths, new.paths), thumbnails=cat(old.thumbnails, new.thumbnails))


def build_from_folder(retriever, root: str, *, existing: GalleryIndex | None = None,
                      progress_out: TextIO | None = None) -> tuple[GalleryIndex, BuildReport]:
  """Encodes the images below `root` (those not in `existing`) into an index."""
  t0 = time.time()
  report = BuildReport()
  files, report.skipped, folders = scan_folder(root)
  present = set(existing.paths.tolist()) if existing is not None and existing.paths is not None \
      else set()
  todo = [i for i, (p, _) in enumerate(files) if p not in present]
  report.already_present = len(files) - len(todo)
  names = [files[i][0] for i in todo]
  size = retriever.image_shape[0]
  progress = Progress(len(todo), "encoding images", progress_out)
  kept, codes, thumbs = _encode_stream(
      retriever, len(todo), lambda j: images_lib.load_image(names[j], size), report,
      progress, names)
  new = None
  if kept:
    labels = unknown_labels(retriever.schema, len(kept))
    for row, j in enumerate(kept):
      found = folder_labels(folders[todo[j]], retriever.schema)
      for name, value in (found or {}).items():
        labels[name][row] = value
    start = int(existing.ids.max()) + 1 if existing is not None and len(existing) else 0
    new = _new_index(retriever, codes, start + np.arange(len(kept)), labels,
                     np.array([names[j] for j in kept]), thumbs)
  report.added, report.seconds = len(kept), time.time() - t0
  index = merge(existing, new)
  if index is None:
    raise ValueError(f"--images={root}: no readable image found ({len(report.skipped)} "
                     "files skipped)")
  return index, report


def build_from_split(retriever, split: str, *, existing: GalleryIndex | None = None,
                     progress_out: TextIO | None = None) -> tuple[GalleryIndex, BuildReport]:
  """Encodes a split of the run's own dataset (e.g. "gallery") with its labels and ids."""
  from dnh_jax import data as data_lib  # pylint: disable=g-import-not-at-top  (TFDS: only here)
  t0 = time.time()
  report = BuildReport()
  config = retriever.config
  if split not in data_lib.SPLITS:
    raise ValueError(f"--split={split!r}; expected one of {list(data_lib.SPLITS)}")
  splits = data_lib.load_splits(config.data, seed=config.seed,
                                data_dir=data_lib.default_data_dir(config.data))
  data = splits.data[split]
  present = set(existing.ids.tolist()) if existing is not None else set()
  todo = np.array([i for i, x in enumerate(data.ids) if int(x) not in present], np.int64)
  report.already_present = len(data) - len(todo)
  names = [f"{config.data.name}:{split}/{int(data.ids[i])}" for i in todo]
  progress = Progress(len(todo), f"encoding split {split}", progress_out)
  kept, codes, thumbs = _encode_stream(retriever, len(todo), lambda j: data.images[todo[j]],
                                       report, progress, names)
  new = None
  if kept:
    rows = todo[kept]
    new = _new_index(retriever, codes, data.ids[rows], {k: v[rows] for k, v in data.labels.items()},
                     np.array([names[j] for j in kept]), thumbs)
  report.added, report.seconds = len(kept), time.time() - t0
  return merge(existing, new), report
