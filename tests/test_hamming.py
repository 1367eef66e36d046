"""Hamming distances and exact top-k: hand cases, brute force, FAISS, sharding."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from dnh_jax.retrieval import codes, hamming


def _random(rng, count, bits):
  return codes.pack_codes(rng.standard_normal((count, bits)))


def _reference_topk(dist, k):
  """Brute force: stable sort by distance = ties by gallery index."""
  order = np.argsort(dist, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(dist, order, 1), order


def test_hand_distances():
  # q = 1011 (LSB first: bits 0, 2, 3 -> 13); gallery 1011 (13), 0100 (2), 1001 (9):
  # XOR with 13 -> 0, 15 (4 bits), 4 (1 bit).
  q = np.array([[13]], np.uint32)
  g = np.array([[13], [2], [9]], np.uint32)
  assert hamming.hamming_distances(q, g).tolist() == [[0, 4, 1]]
  d, i = hamming.hamming_topk(q, g, 2)
  assert d.tolist() == [[0, 1]] and i.tolist() == [[0, 2]]


@pytest.mark.parametrize("bits", [8, 33, 64, 100])
def test_distances_match_unpacked(bits):
  rng = np.random.default_rng(bits)
  q, g = _random(rng, 9, bits), _random(rng, 50, bits)
  uq, ug = codes.unpack_codes(q, bits), codes.unpack_codes(g, bits)
  expected = (uq[:, None, :] != ug[None, :, :]).sum(-1)
  np.testing.assert_array_equal(hamming.hamming_distances(q, g), expected)
  assert hamming.hamming_distances(q, g, dtype=np.uint8).dtype == np.uint8


@pytest.mark.parametrize("bits,n,k,group,gallery_chunk", [
    (8, 3000, 10, 16, 1 << 21),    # heavy ties, grouped path
    (8, 3000, 10, 16, 1100),       # gallery chunks merged, ragged last chunk
    (64, 3000, 7, 8, 1 << 21),
    (48, 2001, 20, 4, 1 << 21),    # tail not a multiple of the group size
    (8, 300, 300, 16, 1 << 21),    # k = N: direct path
    (16, 64, 1, 16, 1 << 21),
])
def test_topk_matches_stable_sort(bits, n, k, group, gallery_chunk):
  rng = np.random.default_rng(n + k)
  q, g = _random(rng, 37, bits), _random(rng, n, bits)
  d_ref, i_ref = _reference_topk(hamming.hamming_distances(q, g), k)
  d, i = hamming.hamming_topk(q, g, k, group_size=group, query_chunk=16,
                              gallery_chunk=gallery_chunk)
  assert d.dtype == np.int32 and i.dtype == np.int32
  np.testing.assert_array_equal(i, i_ref)
  np.testing.assert_array_equal(d, d_ref)


@pytest.mark.parametrize("bits,n,segments,weights", [
    (128, 5000, None, None),               # grouped path, 4 words -> 2
    (100, 3000, None, None),               # odd word count: a zero high half
    (160, 2001, (50, 60, 50), (3, 0, 2)),  # masks across 64-bit words, a zero weight
    (256, 300, (128, 128), (1, 4)),        # direct path
])
def test_word_bits_64_equals_32(bits, n, segments, weights):
  # The 64-bit kernel (x64 scope, pairs of packed words) returns exactly the 32-bit
  # kernel's lists, for numpy and jax inputs, and leaves x64 off afterwards.
  rng = np.random.default_rng(bits + n)
  q, g = _random(rng, 37, bits), _random(rng, n, bits)
  kw = dict(k=40, segments=segments, weights=weights, query_chunk=16)
  d32, i32 = hamming.hamming_topk(q, g, word_bits=32, **kw)
  d64, i64 = hamming.hamming_topk(q, g, word_bits=64, **kw)
  dj, ij = hamming.hamming_topk(jax.numpy.asarray(q), jax.numpy.asarray(g), word_bits=64,
                                **kw)
  for d, i in ((d64, i64), (np.asarray(dj), np.asarray(ij))):
    np.testing.assert_array_equal(d, d32)
    np.testing.assert_array_equal(i, i32)
  assert d64.dtype == i64.dtype == dj.dtype == np.int32
  assert jax.numpy.arange(2).dtype == np.int32   # x64 mode was scoped
  d_ref, i_ref = _reference_topk(
      hamming.hamming_distances(q, g, segments=segments, weights=weights), 40)
  np.testing.assert_array_equal(i32, i_ref)


def test_word_bits_choice():
  assert hamming.choose_word_bits(32, 4) == 32
  assert hamming.choose_word_bits("auto", 2) == 32
  assert hamming.choose_word_bits("auto", 4) == (64 if jax.default_backend() == "cpu"
                                                 else 32)
  assert hamming.choose_word_bits("auto", 4, sharded=True) == 32
  with pytest.raises(ValueError, match="not supported with a mesh"):
    hamming.choose_word_bits(64, 4, sharded=True)
  with pytest.raises(ValueError, match="word_bits"):
    hamming.hamming_topk(np.zeros((1, 1), np.uint32), np.zeros((3, 1), np.uint32), 1,
                         word_bits=16)


@pytest.mark.parametrize("m,itemsize", [(65536, 4), (62500, 4), (1, 4), (4096, 8), (17, 8)])
def test_padded_groups_stride_is_odd_cache_lines(m, itemsize):
  # A power-of-two row length (2**20 codes: M = 65,536 groups) puts every row of the
  # layout in the same cache sets; the padded row is an odd number of cache lines.
  padded = hamming.padded_groups(m, itemsize)
  lines, rest = divmod(padded * itemsize, hamming.CACHE_LINE)
  assert padded >= m and rest == 0 and lines % 2 == 1
  assert padded - m <= 2 * hamming.CACHE_LINE // itemsize


def test_all_equal_codes_tie_by_index():
  g = np.zeros((2000, 1), np.uint32)
  d, i = hamming.hamming_topk(np.zeros((3, 1), np.uint32), g, 25)
  np.testing.assert_array_equal(i, np.tile(np.arange(25), (3, 1)))
  assert not d.any()


def test_priority_weights_hand():
  # Last segment weight 1; middle: 1 + 16*1 = 17; first: 1 + 16*17 + 16*1 = 289.
  assert hamming.priority_weights((16, 16, 16)) == (289, 17, 1)
  # (8, 4): last 1, first 1 + 4 = 5.
  assert hamming.priority_weights((8, 4)) == (5, 1)


def test_segments_and_weights():
  rng = np.random.default_rng(3)
  segments = (16, 16, 16)
  q, g = _random(rng, 6, 48), _random(rng, 1500, 48)
  uq, ug = codes.unpack_codes(q, 48), codes.unpack_codes(g, 48)
  diff = uq[:, None, :] != ug[None, :, :]
  sub = np.stack([diff[..., 0:16].sum(-1), diff[..., 16:32].sum(-1),
                  diff[..., 32:48].sum(-1)], -1)                       # [Q, N, 3]
  for weights in [(1, 1, 1), (2, 0, 1), hamming.priority_weights(segments)]:
    want = sub @ np.array(weights)
    got = hamming.hamming_distances(q, g, segments=segments, weights=weights)
    np.testing.assert_array_equal(got, want)
    d, i = hamming.hamming_topk(q, g, 20, segments=segments, weights=weights)
    d_ref, i_ref = _reference_topk(want, 20)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)
  # Priority weights rank exactly lexicographically by (d_1, d_2, d_3, index).
  for row in range(q.shape[0]):
    lex = np.lexsort((np.arange(g.shape[0]), sub[row, :, 2], sub[row, :, 1], sub[row, :, 0]))
    np.testing.assert_array_equal(i[row], lex[:20])


def test_segments_across_word_boundary():
  # Segments (20, 20) of a 40-bit code: the second one spans words 0 and 1.
  rng = np.random.default_rng(5)
  q, g = _random(rng, 4, 40), _random(rng, 100, 40)
  uq, ug = codes.unpack_codes(q, 40), codes.unpack_codes(g, 40)
  diff = uq[:, None, :] != ug[None, :, :]
  want = 3 * diff[..., :20].sum(-1) + diff[..., 20:].sum(-1)
  got = hamming.hamming_distances(q, g, segments=(20, 20), weights=(3, 1))
  np.testing.assert_array_equal(got, want)


def test_agrees_with_faiss():
  faiss = pytest.importorskip("faiss")
  rng = np.random.default_rng(7)
  for bits in (32, 64):
    q, g = _random(rng, 50, bits), _random(rng, 8000, bits)
    index = faiss.IndexBinaryFlat(bits)
    index.add(g.view(np.uint8))
    d_ref, i_ref = index.search(q.view(np.uint8), 40)
    d, i = hamming.hamming_topk(q, g, 40)
    np.testing.assert_array_equal(d, d_ref)
    np.testing.assert_array_equal(i, i_ref)


def test_sharded_equals_unsharded():
  assert jax.device_count() >= 4, "conftest sets 4 fake CPU devices"
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(11)
  for bits, n, k in ((8, 3001, 10), (48, 6, 5)):
    q, g = _random(rng, 21, bits), _random(rng, n, bits)
    want = hamming.hamming_topk(q, g, k, group_size=8)
    got = hamming.hamming_topk(q, g, k, mesh=mesh, axis_name="data", group_size=8)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
  # A gallery already sharded on its item axis, with segments and weights.
  g = _random(rng, 4000, 48)
  sharded = jax.device_put(g, NamedSharding(mesh, P("data", None)))
  w = hamming.priority_weights((16, 16, 16))
  want = hamming.hamming_topk(q[:, :2], g, 9, segments=(16, 16, 16), weights=w)
  got = hamming.hamming_topk(q[:, :2], sharded, 9, segments=(16, 16, 16), weights=w,
                             mesh=mesh, axis_name="data")
  np.testing.assert_array_equal(got[1], want[1])


def test_no_queries():
  d, i = hamming.hamming_topk(np.zeros((0, 2), np.uint32), np.zeros((5, 2), np.uint32), 3)
  assert d.shape == i.shape == (0, 3)


def test_errors():
  g = np.zeros((10, 2), np.uint32)
  q = np.zeros((1, 2), np.uint32)
  with pytest.raises(ValueError, match="k must be"):
    hamming.hamming_topk(q, g, 11)
  with pytest.raises(ValueError, match="words"):
    hamming.hamming_topk(np.zeros((1, 1), np.uint32), g, 1)
  with pytest.raises(ValueError, match="weights need segments"):
    hamming.hamming_topk(q, g, 1, weights=(1,))
  with pytest.raises(ValueError, match="does not match"):
    hamming.hamming_topk(q, g, 1, segments=(8, 8))
  with pytest.raises(ValueError, match="non-negative integers"):
    hamming.hamming_topk(q, g, 1, segments=(32, 32), weights=(0.5, 1))
  with pytest.raises(ValueError, match="exceeds"):
    hamming.hamming_topk(q, g, 1, segments=(32, 32), weights=(2**20, 1))
  with pytest.raises(ValueError, match="cannot hold"):
    hamming.hamming_distances(q, g, segments=(32, 32), weights=(9, 1), dtype=np.uint8)
