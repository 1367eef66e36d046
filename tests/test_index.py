"""Persistent gallery index: round trip, search, corruption, FAISS export."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from dnh_jax.data.schema import multi_characteristic_schema
from dnh_jax.retrieval.codes import pack_codes
from dnh_jax.retrieval.hamming import hamming_topk, priority_weights
from dnh_jax.retrieval.index import GalleryIndex, IndexFileError, fingerprint

SCHEMA = multi_characteristic_schema()


def _index(n=300, seed=0):
  rng = np.random.default_rng(seed)
  return GalleryIndex(
      codes=rng.standard_normal((n, 48)), ids=np.arange(n) * 7 + 3,
      labels={"modality": rng.integers(0, 5, n).astype(np.int32),
              "organ": rng.integers(0, 5, n).astype(np.int32),
              "disease": rng.integers(0, 15, n).astype(np.int32)},
      segments=(16, 16, 16), schema=SCHEMA,
      fingerprints={"model": fingerprint({"w": np.ones(3)}), "config": fingerprint({"a": 1})})


def test_round_trip_and_search(tmp_path):
  ix = _index()
  path = ix.save(str(tmp_path / "gallery.dnhidx"))
  assert os.listdir(tmp_path) == ["gallery.dnhidx"]  # no temporary file left behind
  back = GalleryIndex.load(path, expect_fingerprints={"config": fingerprint({"a": 1})},
                           expect_num_bits=48)
  np.testing.assert_array_equal(back.codes, ix.codes)
  np.testing.assert_array_equal(back.ids, ix.ids)
  for name in SCHEMA.names:
    np.testing.assert_array_equal(back.labels[name], ix.labels[name])
  assert back.num_bits == 48 and back.segments == (16, 16, 16) and back.schema == SCHEMA
  assert back.fingerprints == ix.fingerprints
  q = np.random.default_rng(1).standard_normal((5, 48))
  d, ids = back.search(q, 10)
  d_ref, i_ref = hamming_topk(pack_codes(q), ix.codes, 10)
  np.testing.assert_array_equal(d, d_ref)
  np.testing.assert_array_equal(ids, ix.ids[i_ref])
  w = priority_weights((16, 16, 16))
  _, ids = back.search(q, 10, weights=w)
  _, i_ref = hamming_topk(pack_codes(q), ix.codes, 10, segments=(16, 16, 16), weights=w)
  np.testing.assert_array_equal(ids, ix.ids[i_ref])


def test_save_replaces_existing(tmp_path):
  path = str(tmp_path / "g.dnhidx")
  _index(n=50).save(path)
  _index(n=80, seed=1).save(path)
  assert len(GalleryIndex.load(path)) == 80


def _rewrite(path, out, edit):
  """Copies a zip, letting `edit(name, bytes) -> bytes` change members (valid CRCs)."""
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
    for name in src.namelist():
      dst.writestr(name, edit(name, src.read(name)))


def test_corrupt_truncated_and_mismatched(tmp_path):
  path = _index().save(str(tmp_path / "g.dnhidx"))
  raw = open(path, "rb").read()
  bad = str(tmp_path / "bad")
  with open(bad, "wb") as f:  # a flipped byte inside the codes
    f.write(raw[:300] + bytes([raw[300] ^ 0xFF]) + raw[301:])
  with pytest.raises(IndexFileError, match="bad"):
    GalleryIndex.load(bad)
  with open(bad, "wb") as f:  # truncated
    f.write(raw[:len(raw) // 2])
  with pytest.raises(IndexFileError, match="truncated"):
    GalleryIndex.load(bad)

  def change_codes(name, data):  # consistent zip, wrong array: only our checksum sees it
    if name != "codes.npy":
      return data
    x = np.load(io.BytesIO(data))
    x[0, 0] ^= 1
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()

  _rewrite(path, bad, change_codes)
  with pytest.raises(IndexFileError, match="checksum mismatch in 'codes'"):
    GalleryIndex.load(bad)

  def bump_version(name, data):
    if name != "manifest.json":
      return data
    m = json.loads(data)
    m["version"] = 99
    return json.dumps(m).encode()

  _rewrite(path, bad, bump_version)
  with pytest.raises(IndexFileError, match="version 99"):
    GalleryIndex.load(bad)
  with pytest.raises(IndexFileError, match="fingerprint 'model'"):
    GalleryIndex.load(path, expect_fingerprints={"model": "other"})
  with pytest.raises(IndexFileError, match="expected 64"):
    GalleryIndex.load(path, expect_num_bits=64)
  with pytest.raises(FileNotFoundError):
    GalleryIndex.load(str(tmp_path / "missing"))


def test_constructor_checks():
  with pytest.raises(ValueError, match="ids"):
    GalleryIndex(codes=np.zeros((3, 8)), ids=np.arange(4))
  with pytest.raises(ValueError, match="segments"):
    GalleryIndex(codes=np.zeros((3, 8)), ids=np.arange(3), segments=(4, 2))
  with pytest.raises(ValueError, match="schema"):
    GalleryIndex(codes=np.zeros((3, 8)), ids=np.arange(3), labels={}, schema=SCHEMA)


def test_fingerprint_is_stable_and_sensitive():
  a = {"w": np.arange(4.0), "b": {"c": np.ones(2)}}
  assert fingerprint(a) == fingerprint({"b": {"c": np.ones(2)}, "w": np.arange(4.0)})
  assert fingerprint(a) != fingerprint({"w": np.arange(4.0) + 1, "b": {"c": np.ones(2)}})
  assert fingerprint({"lr": 1e-3}) != fingerprint({"lr": 1e-4})


def test_faiss_export(tmp_path):
  faiss = pytest.importorskip("faiss")
  ix = _index(n=500)
  path = ix.to_faiss(str(tmp_path / "g.faiss"))
  index = faiss.read_index_binary(path)
  q = np.random.default_rng(2).standard_normal((6, 48))
  d_f, ids_f = index.search(pack_codes(q).view(np.uint8), 15)
  d, ids = ix.search(q, 15)
  np.testing.assert_array_equal(d_f, d)
  np.testing.assert_array_equal(ids_f, ids)
