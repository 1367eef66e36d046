"""Persistent gallery index: packed codes, item ids, labels and code layout in one file.

File format (version 1): a zip of .npy members written by numpy (no pickle):
``codes`` uint32[N, W], ``ids`` int64[N], ``label/<name>`` per characteristic, optionally
``paths`` (unicode[N], where each item came from) and ``thumbnails`` (uint8[N, S, S], the
images the model encoded, for showing results), and ``manifest``, UTF-8 JSON holding the format name and version, num_bits, segments, the
schema, fingerprints (e.g. of the model parameters and the config) and a SHA-256 of every
array (dtype, shape and bytes). Files are written to a temporary name in the same folder
and moved into place with `os.replace`, so a reader never sees a half-written index. Load
verifies version, checksums and shapes, and raises `IndexFileError` naming the file and
what is wrong on a corrupt, truncated or mismatched file.

`GalleryIndex.to_faiss` exports a FAISS `IndexBinaryIDMap` over `IndexBinaryFlat` (search
returns item ids) when faiss is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Mapping, Sequence

import numpy as np

from dnh_jax import utils
from dnh_jax.data.schema import Schema
from dnh_jax.retrieval.codes import WORD_BITS, as_packed, num_words
from dnh_jax.retrieval.hamming import hamming_topk

FORMAT = "dnh_jax.gallery_index"
VERSION = 1


class IndexFileError(ValueError):
  """A gallery index file that cannot be used (corrupt, truncated, wrong version, or not
  matching what the caller expects)."""


def fingerprint(data) -> str:
  """SHA-256 hex of bytes, text, a JSON-able object, or a pytree of arrays (sorted by
  path), for recording which model and config produced an index."""
  h = hashlib.sha256()
  if isinstance(data, (bytes, bytearray)):
    h.update(bytes(data))
  elif isinstance(data, str):
    h.update(data.encode())
  elif isinstance(data, Mapping):
    for key in sorted(data, key=str):
      h.update(f"{key}={fingerprint(data[key])};".encode())
  elif isinstance(data, (list, tuple)):
    for value in data:
      h.update(f"{fingerprint(value)};".encode())
  elif hasattr(data, "__array__"):
    _hash_array(h, np.asarray(data))
  else:
    h.update(json.dumps(data, sort_keys=True, default=str).encode())
  return h.hexdigest()


def _hash_array(h, x: np.ndarray) -> None:
  h.update(f"{x.dtype.str}{x.shape}".encode())
  h.update(np.ascontiguousarray(x).tobytes())


def _checksum(x: np.ndarray) -> str:
  h = hashlib.sha256()
  _hash_array(h, x)
  return h.hexdigest()


@dataclasses.dataclass
class GalleryIndex:
  """A searchable gallery.

  Attributes:
    codes: uint32[N, W] packed codes.
    ids: int64[N] item ids (dataset ids), returned by `search`.
    labels: {characteristic: int32[N] | uint8[N, V]}.
    num_bits: K.
    segments: sub-code lengths (structured codes), or ().
    schema: the label schema, or None.
    fingerprints: e.g. {"model": ..., "config": ...} (see `fingerprint`).
    paths: unicode[N] source of each item (a file, or "<dataset>:<split>/<id>"), or None.
    thumbnails: uint8[N, S, S] the encoded images, or None.

  Unknown labels (an unlabelled image) are -1 (single-label characteristics).
  """

  codes: np.ndarray
  ids: np.ndarray
  labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  num_bits: int = 0
  segments: tuple[int, ...] = ()
  schema: Schema | None = None
  fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)
  paths: np.ndarray | None = None
  thumbnails: np.ndarray | None = None

  def __post_init__(self):
    codes, bits = as_packed(np.asarray(self.codes), self.num_bits or None)
    self.codes = np.ascontiguousarray(codes)
    self.num_bits = bits
    n = self.codes.shape[0]
    self.ids = np.asarray(self.ids, np.int64)
    if self.ids.shape != (n,):
      raise ValueError(f"ids: expected shape ({n},) like the codes, got {self.ids.shape}")
    self.labels = {k: np.asarray(v) for k, v in self.labels.items()}
    for name, v in self.labels.items():
      if v.shape[:1] != (n,):
        raise ValueError(f"labels[{name!r}]: expected {n} rows, got shape {v.shape}")
    self.segments = tuple(int(s) for s in self.segments)
    if self.segments and sum(self.segments) != self.num_bits:
      raise ValueError(f"segments {self.segments} sum to {sum(self.segments)}, "
                       f"not num_bits={self.num_bits}")
    if self.schema is not None and set(self.labels) != set(self.schema.names):
      raise ValueError(f"labels {sorted(self.labels)} do not match the schema's "
                       f"characteristics {list(self.schema.names)}")
    self.fingerprints = {str(k): str(v) for k, v in self.fingerprints.items()}
    if self.paths is not None:
      self.paths = np.asarray(self.paths, dtype=str).reshape(-1)
      if self.paths.shape != (n,):
        raise ValueError(f"paths: expected {n} entries like the codes, got {self.paths.shape}")
    if self.thumbnails is not None:
      self.thumbnails = np.asarray(self.thumbnails)
      if self.thumbnails.ndim == 4 and self.thumbnails.shape[-1] == 1:
        self.thumbnails = self.thumbnails[..., 0]
      if (self.thumbnails.dtype != np.uint8 or self.thumbnails.ndim != 3
          or self.thumbnails.shape[0] != n):
        raise ValueError(f"thumbnails: expected uint8[{n}, S, S], got "
                         f"{self.thumbnails.dtype}{list(self.thumbnails.shape)}")

  def __len__(self) -> int:
    return self.codes.shape[0]

  def search(self, query_codes, k: int, *, weights: Sequence[int] | None = None):
    """k nearest items per query, ordered by (distance, position in the index).

    Args:
      query_codes: real [Q, K] or packed uint32 [Q, W].
      k: number of results.
      weights: per-segment integer weights (needs `segments`), e.g. a preference's.

    Returns:
      (distances int32[Q, k], ids int64[Q, k]).
    """
    if weights is not None and not self.segments:
      raise ValueError("weights need an index with segments")
    q, _ = as_packed(np.asarray(query_codes), self.num_bits)
    segments = self.segments or None
    d, pos = hamming_topk(q, self.codes, min(k, len(self)), segments=segments,
                          weights=weights)
    return d, self.ids[pos]

  # ------------------------------------------------------------------- persistence

  def _arrays(self) -> dict[str, np.ndarray]:
    arrays = {"codes": self.codes, "ids": self.ids}
    arrays.update({f"label/{k}": v for k, v in self.labels.items()})
    if self.paths is not None:
      arrays["paths"] = self.paths
    if self.thumbnails is not None:
      arrays["thumbnails"] = self.thumbnails
    return arrays

  def save(self, path: str) -> str:
    """Writes the index atomically to `path` (conventionally *.dnhidx); returns path."""
    arrays = self._arrays()
    manifest = {
        "format": FORMAT, "version": VERSION, "num_bits": self.num_bits,
        "num_items": len(self), "num_words": self.codes.shape[1],
        "segments": list(self.segments),
        "schema": self.schema.to_json() if self.schema is not None else None,
        "fingerprints": self.fingerprints,
        "checksums": {name: _checksum(x) for name, x in arrays.items()},
    }

    def write(f):
      with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, x in arrays.items():
          buf = io.BytesIO()
          np.save(buf, x, allow_pickle=False)
          z.writestr(name + ".npy", buf.getvalue())
        z.writestr("manifest.json", json.dumps(manifest, indent=1))

    utils.atomic_write(path, write)
    return path

  @classmethod
  def load(cls, path: str, *, expect_fingerprints: Mapping[str, str] | None = None,
           expect_num_bits: int | None = None) -> "GalleryIndex":
    """Reads and verifies an index file.

    Args:
      path: file written by `save`.
      expect_fingerprints: entries that must match the stored fingerprints.
      expect_num_bits: code length the caller needs.

    Raises:
      FileNotFoundError: no such file.
      IndexFileError: corrupt, truncated, other version, or a mismatch with the
        expectations; the message names the file and the problem.
    """
    if not os.path.exists(path):
      raise FileNotFoundError(f"gallery index {path!r} does not exist")
    fail = lambda msg: IndexFileError(f"gallery index {path!r}: {msg}")
    try:
      with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json").decode())
        if manifest.get("format") != FORMAT:
          raise fail(f"not a {FORMAT} file (format {manifest.get('format')!r})")
        if manifest.get("version") != VERSION:
          raise fail(f"format version {manifest.get('version')!r}; this code reads "
                     f"version {VERSION} - rebuild the index")
        arrays = {}
        for name, digest in manifest["checksums"].items():
          x = np.load(io.BytesIO(z.read(name + ".npy")), allow_pickle=False)
          if _checksum(x) != digest:
            raise fail(f"checksum mismatch in {name!r} (file corrupt)")
          arrays[name] = x
    except IndexFileError:
      raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError,
            json.JSONDecodeError, zipfile.LargeZipFile) as e:
      raise fail(f"unreadable or truncated ({type(e).__name__}: {e})") from e
    codes = arrays.get("codes")
    if codes is None or codes.shape != (manifest["num_items"], manifest["num_words"]):
      raise fail("codes missing or of the wrong shape")
    if num_words(manifest["num_bits"]) != codes.shape[1]:
      raise fail(f"num_bits {manifest['num_bits']} does not fit {codes.shape[1]} words")
    if expect_num_bits is not None and manifest["num_bits"] != expect_num_bits:
      raise fail(f"holds {manifest['num_bits']}-bit codes, expected {expect_num_bits}")
    stored = manifest.get("fingerprints", {})
    for key, want in (expect_fingerprints or {}).items():
      if stored.get(key) != want:
        raise fail(f"fingerprint {key!r} is {stored.get(key)!r}, expected {want!r} "
                   "(index built from another model or config)")
    schema = Schema.from_json(manifest["schema"]) if manifest.get("schema") else None
    labels = {name[len("label/"):]: x for name, x in arrays.items()
              if name.startswith("label/")}
    return cls(codes=codes, ids=arrays["ids"], labels=labels,
               num_bits=manifest["num_bits"], segments=tuple(manifest["segments"]),
               schema=schema, fingerprints=stored, paths=arrays.get("paths"),
               thumbnails=arrays.get("thumbnails"))

  def to_faiss(self, path: str) -> str:
    """Writes a FAISS binary index (IndexBinaryIDMap over IndexBinaryFlat, item ids) to
    `path` atomically. Needs faiss; its Hamming distances equal ours because unused
    high bits are 0."""
    try:
      import faiss  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError("to_faiss needs the faiss package (pip install faiss-cpu)") from None
    index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(self.codes.shape[1] * WORD_BITS))
    index.add_with_ids(self.codes.view(np.uint8), self.ids)
    data = faiss.serialize_index_binary(index)
    utils.atomic_write(path, lambda f: f.write(np.asarray(data).tobytes()))
    return path
