"""Sharded evaluation equals the one-host evaluator exactly (4 fake CPU devices).

The multi-process equality (two processes vs one) is in test_multiprocess.py; here the
same code runs in one process, where every device is addressable, on inputs chosen to be
hard: 8-bit codes (heavy distance ties), galleries that do not split evenly (padding),
preferences on structured codes, expected ties, multi-label relevance.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import parallel
from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import Evaluator
from dnh_jax.evaluation import sharded
from dnh_jax.retrieval import pack_codes


def _labels(rng, schema, n):
  out = {}
  for c in schema.characteristics:
    if c.kind == schema_lib.MULTI:
      out[c.name] = (rng.random((n, c.size)) < 0.3).astype(np.uint8)
    else:
      out[c.name] = rng.integers(0, min(c.size, 3), n).astype(np.int32)
  return out


def _shard(real_codes, mesh, batch_size=8):
  """Encodes by packing (the identity 'model') through encode_to_shards."""
  pack = jax.jit(pack_codes, in_shardings=parallel.data_sharding(mesh),
                 out_shardings=parallel.data_sharding(mesh))
  return sharded.encode_to_shards(pack, real_codes, mesh, parallel.DATA_AXIS, batch_size,
                                  preprocess=lambda x: x)


@pytest.mark.parametrize("ties,num_gallery", [("index", 37), ("expected", 64)])
def test_sharded_evaluator_equals_evaluator(ties, num_gallery):
  rng = np.random.default_rng(num_gallery)
  schema = schema_lib.multi_characteristic_schema()
  segments = (3, 3, 2)   # 8-bit structured codes: many equal distances
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 4
  q_real = rng.normal(size=(23, 8)).astype(np.float32)
  g_real = rng.normal(size=(num_gallery, 8)).astype(np.float32)
  q_lab, g_lab = _labels(rng, schema, 23), _labels(rng, schema, num_gallery)
  options = dict(ks=(5, 10, 30), relevance="all", preferences=("organ", "modality>organ"),
                 segments=segments, ties=ties)
  want = Evaluator(schema, **options).run(q_real, q_lab, g_real, g_lab)

  gallery = _shard(g_real, mesh)
  assert gallery.packed.shape[0] % 4 == 0 and gallery.num_items == num_gallery
  assert gallery.padding == gallery.packed.shape[0] - num_gallery
  np.testing.assert_array_equal(gallery.gather(), pack_codes(g_real))
  ev = sharded.ShardedEvaluator(schema, **options)
  per_query = ev.per_query(pack_codes(q_real), q_lab, gallery, g_lab)
  got = ev.summarize(per_query)
  assert sorted(got) == sorted(want)
  for key in want:   # exactly equal, NaN where both are undefined
    assert (got[key] == want[key]) or (np.isnan(got[key]) and np.isnan(want[key])), key

  # A query subset (a query group) equals evaluating that subset.
  mask = q_lab["organ"] == 1
  sub = {k: v[mask] for k, v in q_lab.items()}
  want_sub = Evaluator(schema, **options).run(q_real[mask], sub, g_real, g_lab)
  got_sub = ev.summarize(per_query, mask)
  assert all(got_sub[k] == want_sub[k] or np.isnan(want_sub[k]) for k in want_sub)

  bits = np.where(g_real >= 0, 1.0, -1.0)
  assert sharded.bit_balance(gallery, 8) == float(1.0 - np.mean(np.abs(bits.mean(axis=0))))


def test_sharded_multilabel_shared_relevance_and_other_tie_orders():
  rng = np.random.default_rng(3)
  schema = schema_lib.chest_multilabel_schema()
  mesh = parallel.make_mesh()
  q_real = rng.normal(size=(11, 16)).astype(np.float32)
  g_real = rng.normal(size=(50, 16)).astype(np.float32)
  q_lab, g_lab = _labels(rng, schema, 11), _labels(rng, schema, 50)
  gallery = _shard(g_real, mesh, batch_size=4)
  for ties in ("index", "optimistic"):   # optimistic: gathered, then evaluate_codes
    options = dict(ks=(10, 50), relevance="shared", ties=ties)
    want = Evaluator(schema, **options).run(q_real, q_lab, g_real, g_lab)
    ev = sharded.ShardedEvaluator(schema, **options)
    got = ev.summarize(ev.per_query(pack_codes(q_real), q_lab, gallery, g_lab))
    assert got == pytest.approx(want, abs=0, nan_ok=True)


def test_row_plan_covers_every_item_once_in_device_major_order():
  for n, devices, batch in ((37, 4, 8), (5, 4, 8), (64, 4, 16), (1, 1, 3)):
    plan = sharded.RowPlan(n, devices, batch)
    rows = np.concatenate([np.concatenate([plan.rows(t, j) for t in range(plan.num_steps)])
                           for j in range(devices)])
    np.testing.assert_array_equal(rows, np.arange(plan.padded_items))
    assert plan.padded_items >= n and plan.padded_items % devices == 0


def test_sum_over_processes_is_identity_for_one_process_and_keeps_int64():
  big = np.array([2**40 + 3, -5], np.int64)
  out = sharded.sum_over_processes({"x": big})
  np.testing.assert_array_equal(out["x"], big)
  assert out["x"].dtype == np.int64


def test_top_indices_drop_padding_rows():
  # Padding rows (beyond num_items) hold the query's own code, i.e. distance 0: they must
  # still never be reported.
  mesh = parallel.make_mesh()
  q = np.zeros((2, 1), np.uint32)
  g = np.full((8, 1), 0xFF, np.uint32)
  g[6:] = 0                                # rows 6, 7 are padding
  codes = sharded.ShardedCodes(
      packed=jax.device_put(jnp.asarray(g), parallel.data_sharding(mesh)), num_items=6,
      mesh=mesh, axis=parallel.DATA_AXIS)
  idx = sharded._top_indices(q, codes, 3, None, None)  # pylint: disable=protected-access
  np.testing.assert_array_equal(idx, [[0, 1, 2], [0, 1, 2]])
