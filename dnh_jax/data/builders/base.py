"""Shared machinery of the dnh_jax TFDS builders.

Every builder writes ArrayRecord files with `tfds.features.Tensor` features only, so that
generation and reading (`as_data_source()`) work without TensorFlow. Each writes a single
TFDS split, `SPLIT`; the train / validation / test splits are drawn from it by
`dnh_jax.data.pipeline` (seeded, stratified, hashed).

Builder parameters vary per experiment (image size, number of examples, combinations,
manual directory, ...), so configs are created on the fly: `make_config` names each one
`<prefix>_<hash>`, where the hash covers the canonical JSON of the parameters and the
source of the code that generates the examples. Different settings therefore never share
a cache directory, and a cache hit is exact: editing the renderer or a builder yields a new
name and a rebuild, never stale data.

A half-built dataset is never mistaken for a complete one: TFDS writes into a sibling
`incomplete.*` directory and renames it into place only after every file and
`dataset_info.json` are written, and a dataset counts as present only once that final
directory exists. `prepare` additionally checks the example count it was promised.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from dnh_jax.data import schema as schema_lib

# Console: TFDS's lines that a user of local data cannot act on are silenced. The
# builder-config dump (a 1,200-character warning per builder), the progress bars and the
# "Downloading and preparing" wording (nothing is downloaded) go; our own summary stays.
tfds.disable_progress_bar()


class _DropConfigDump(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_DropConfigDump())

SPLIT = "examples"   # the one TFDS split each builder writes ("all" is reserved by TFDS)
FILE_FORMAT = "array_record"

_DATA_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_digest(*paths: str) -> str:
  """sha256 of the bytes of `paths` (source files whose edits must invalidate caches)."""
  h = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      h.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
  return h.hexdigest()


def shared_code_files() -> tuple[str, ...]:
  """Source files every builder's output depends on."""
  return (os.path.join(_DATA_DIR, "schema.py"), os.path.join(_DATA_DIR, "images.py"),
          os.path.abspath(__file__))


def files_fingerprint(paths: Iterable[str], root: str) -> str:
  """sha256 over (relative path, size, mtime) of `paths`: changes when any input changes.

  Cheap enough for 100k files (one stat each); contents are not read.
  """
  h = hashlib.sha256()
  for path in sorted(paths):
    st = os.stat(path)
    h.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


# Builds of at least this many examples run their per-example work in worker processes.
PARALLEL_MIN_EXAMPLES = 2000


def parallel_map(fn: Callable, items: Sequence, num_workers: int | None = None) -> Iterator:
  """fn(item) for every item, in order, optionally in worker processes.

  Args:
    fn: a module-level (picklable) pure function: its result must not depend on which
      process runs it, so the output is identical for every `num_workers`.
    items: picklable arguments.
    num_workers: None picks one worker per core (at most 8) when there are at least
      PARALLEL_MIN_EXAMPLES items, else works in this process. Workers are spawned, not
      forked, because the caller may hold JAX's threads.
  """
  if num_workers is None:
    num_workers = min(os.cpu_count() or 1, 8) if len(items) >= PARALLEL_MIN_EXAMPLES else 1
  if num_workers <= 1:
    yield from map(fn, items)
    return
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    yield from pool.map(fn, items, chunksize=64)


@dataclasses.dataclass
class DnhBuilderConfig(tfds.core.BuilderConfig):
  """A builder config created on the fly; `params` is canonical JSON of the parameters."""

  params: str = "{}"


def make_config(prefix: str, params: Mapping[str, Any],
                code_files: Iterable[str]) -> DnhBuilderConfig:
  """Creates the config `<prefix>_<hash of params and code>`.

  Args:
    prefix: a short readable summary (e.g. "s64_n6000").
    params: JSON-serialisable parameters; every one that changes the examples.
    code_files: source files whose content changes the examples.
  """
  canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
  digest = hashlib.sha256(
      (canonical + "\0" + code_digest(*code_files)).encode()).hexdigest()[:16]
  return DnhBuilderConfig(name=f"{prefix}_{digest}", params=canonical,
                          description=canonical)


class DnhBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the dnh_jax builders: one split, Tensor features, no downloads.

  Subclasses implement `schema()` and `_examples()`; they are instantiated directly
  (not through the TFDS registry), which keeps their names out of the global namespace.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  num_workers: int | None = None   # see parallel_map; never changes the examples

  def parallel_map(self, fn: Callable, items: Sequence) -> Iterator:
    return parallel_map(fn, items, self.num_workers)

  def _log_download_bytes(self) -> None:   # TFDS prints "Downloading and preparing ..."
    logging.info("Building %s into %s", self.info.full_name, self.data_path)

  def _log_download_done(self) -> None:
    logging.info("Built %s", self.data_path)

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    # Nothing is ever downloaded. Returning None here also skips TFDS's lookup of a
    # checksums file next to the code, which needs the `importlib_resources` backport
    # that TFDS 4.9 does not declare for Python >= 3.9.
    return None

  @property
  def params(self) -> dict[str, Any]:
    return json.loads(self.builder_config.params)

  @property
  def image_size(self) -> int:
    return int(self.params["image_size"])

  @abc.abstractmethod
  def schema(self) -> schema_lib.Schema:
    """The characteristics this dataset's examples carry."""

  @abc.abstractmethod
  def _examples(self) -> Iterator[dict[str, Any]]:
    """Yields examples {"image", "id", "group", <characteristic>...} with unique ids."""

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.image_size
    features = {
        "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
        "id": tfds.features.Tensor(shape=(), dtype=np.int64),
        # Examples of one group (a patient) always land in the same split.
        "group": tfds.features.Tensor(shape=(), dtype=np.int64),
    }
    for c in self.schema().characteristics:
      if c.kind == schema_lib.SINGLE:
        features[c.name] = tfds.features.Tensor(shape=(), dtype=np.int32)
      else:
        features[c.name] = tfds.features.Tensor(shape=(c.size,), dtype=np.uint8)
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").strip().splitlines()[0],
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(schema=self.schema().to_json(),
                                        params=self.builder_config.params),
        disable_shuffling=True,   # keep the generation order: ids ascend on disk
    )

  def _split_generators(self, dl_manager):
    del dl_manager   # manual inputs come through the config, with our own checks
    return {SPLIT: self._generate_examples()}

  def _generate_examples(self):
    size = self.image_size
    for example in self._examples():
      image = example["image"]
      if image.shape != (size, size, 1) or image.dtype != np.uint8:
        raise ValueError(f"{self.name}: example {example['id']} has image "
                         f"{image.dtype}{list(image.shape)}; expected uint8[{size},{size},1]")
      yield int(example["id"]), example


def is_prepared(builder: DnhBuilder) -> bool:
  """True iff the final (renamed) dataset directory with its dataset_info.json exists."""
  return (builder.data_path / "dataset_info.json").exists()


def prepare(builder: DnhBuilder, *, expected_examples: int | None = None) -> DnhBuilder:
  """Builds the dataset unless a complete copy exists; returns a builder to read it.

  Several processes may race to build the same config into a shared data_dir: each
  writes its own `incomplete.*` directory, the first rename wins and the losers' rename
  fails, after which they read the winner's copy.

  Args:
    builder: an unprepared or prepared builder.
    expected_examples: if given, the number of examples a complete copy must hold.

  Raises:
    ValueError: if an existing copy does not hold `expected_examples` examples.
  """
  if not is_prepared(builder):
    logging.info("Building %s into %s", builder.info.full_name, builder.data_path)
    try:
      builder.download_and_prepare(file_format=FILE_FORMAT)
    except OSError:
      if not is_prepared(builder):
        _remove_empty_dirs(builder)
        raise
      logging.info("Another process finished %s first; reading its copy",
                   builder.info.full_name)
    except BaseException:
      _remove_empty_dirs(builder)   # a failed build leaves no empty dataset folder behind
      raise
    builder = type(builder)(config=builder.builder_config,
                            data_dir=os.fspath(builder.data_dir_root),
                            file_format=FILE_FORMAT)
  if expected_examples is not None:
    found = builder.info.splits[SPLIT].num_examples
    if found != expected_examples:
      raise ValueError(
          f"Dataset {builder.data_path} holds {found} examples, expected "
          f"{expected_examples}; delete that directory to rebuild it")
  return builder


def _remove_empty_dirs(builder: DnhBuilder) -> None:
  """Removes the dataset's version / config / name folders if a failed build left them
  empty (never the data_dir itself, never anything holding a file)."""
  root = os.path.abspath(os.fspath(builder.data_dir_root))
  path = os.path.abspath(os.fspath(builder.data_path))
  while path.startswith(root + os.sep) and os.path.isdir(path) and not os.listdir(path):
    os.rmdir(path)
    path = os.path.dirname(path)


def read_arrays(builder: DnhBuilder, chunk: int = 1024) -> dict[str, np.ndarray]:
  """Reads a prepared dataset into stacked numpy arrays through `as_data_source()`.

  Returns:
    {"image": uint8[N, S, S, 1], "id": int64[N], "group": int64[N], <characteristic>:
    int32[N] | uint8[N, V]}, sorted by id.
  """
  source = builder.as_data_source(split=SPLIT)
  n = len(source)
  features = builder.info.features
  out = {name: np.empty((n,) + tuple(f.shape), f.np_dtype)
         for name, f in features.items()}
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    for offset, example in enumerate(source.__getitems__(list(range(start, stop)))):
      for name, value in example.items():
        out[name][start + offset] = value
  order = np.argsort(out["id"], kind="stable")
  if not np.array_equal(order, np.arange(n)):
    out = {name: value[order] for name, value in out.items()}
  if n and np.any(np.diff(out["id"]) == 0):
    raise ValueError(f"Dataset {builder.data_path} has duplicate example ids")
  return out


def builder_data_dir(data_dir: str) -> str:
  """Validates and returns the TFDS data_dir."""
  if not data_dir:
    raise ValueError("data_dir is empty; expected the TFDS directory to build datasets in")
  return os.path.abspath(os.path.expanduser(data_dir))


def check_manual_dir(manual_dir: str, expected: str) -> str:
  """Returns the absolute manual directory, or raises naming it and what it should hold."""
  if not manual_dir:
    raise ValueError(f"data.manual_dir is empty; expected a directory holding {expected}")
  path = os.path.abspath(os.path.expanduser(manual_dir))
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"data.manual_dir {path} does not exist or is not a directory; expected a "
        f"directory holding {expected}")
  return path
