"""Structured codes: the sub-code + whole-code loss against a NumPy reference, its
configuration, and preferential retrieval orderings on hand-made codes."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import losses
from dnh_jax.data import schema as schema_lib

SCHEMA = schema_lib.multi_characteristic_schema()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Eight images: (modality, organ, disease) ids with agreements on every characteristic.
LABELS = {"modality": np.array([1, 1, 1, 3, 3, 2, 2, 0], np.int32),
          "organ": np.array([0, 0, 0, 1, 1, 2, 2, 2], np.int32),
          "disease": np.array([0, 0, 1, 3, 4, 6, 7, 6], np.int32)}
SEGMENTS = {"modality": 4, "organ": 6, "disease": 8}


def _config(arg=None):
  spec = importlib.util.spec_from_file_location("structured_cfg",
                                                os.path.join(ROOT, "configs", "structured.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _np_dch(h, s, gamma, lam):
  """DCH by hand: class-balanced Cauchy cross-entropy + Cauchy quantization."""
  h = h.astype(np.float64)
  n, k = h.shape
  u = h / np.linalg.norm(h, axis=1, keepdims=True)
  d = np.maximum(0.5 * k * (1 - u @ u.T), 0.0)
  off = ~np.eye(n, dtype=bool)
  total, similar = off.sum(), (s * off).sum()
  w = np.where(s > 0.5, total / max(similar, 1), total / max(total - similar, 1))
  p = gamma / (gamma + d)
  with np.errstate(divide="ignore", invalid="ignore"):
    ce = -(s * np.log(p) + (1 - s) * np.log(1 - p + 1e-300))
  pair = (w * ce)[off].mean()
  a = np.abs(h)
  cos_one = a.sum(1) / (np.linalg.norm(a, axis=1) * np.sqrt(k))
  d_q = np.maximum(0.5 * k * (1 - cos_one), 0.0)
  return pair + lam * np.log1p(d_q / gamma).mean()


def _outputs(seed=0):
  rng = np.random.default_rng(seed)
  sub = {c: np.tanh(rng.normal(size=(8, b))).astype(np.float32) for c, b in SEGMENTS.items()}
  codes = np.concatenate([sub[c] for c in SCHEMA.names], axis=1)
  return sub, codes


def test_structured_loss_matches_numpy():
  sub, codes = _outputs()
  cfg = ml_collections.ConfigDict({"name": "structured", "similarity": "all",
                                   "weights": {"subcode": 0.7, "whole": 0.4, "gamma": 5.0}})
  outputs = {"codes": jnp.asarray(codes),
             "subcodes": {c: jnp.asarray(v) for c, v in sub.items()}}
  labels = {k: jnp.asarray(v) for k, v in LABELS.items()}
  # One compiled call: op-by-op dispatch of this many small ops is slow on a busy CPU.
  loss, metrics = jax.jit(lambda o, l: losses.LOSSES["structured"](
      o, l, cfg=cfg, schema=SCHEMA, step=0, key=jax.random.key(0)))(outputs, labels)
  per_char = []
  for c in SCHEMA.names:
    s = (LABELS[c][:, None] == LABELS[c][None, :]).astype(float)
    want = _np_dch(sub[c], s, 5.0, 0.1)
    np.testing.assert_allclose(metrics[f"structured/subcode_{c}"], want, rtol=2e-4)
    per_char.append(want)
    b = np.where(sub[c] >= 0, 1, -1)
    ham = (b[:, None] != b[None, :]).sum(-1)
    off = ~np.eye(8, dtype=bool)
    np.testing.assert_allclose(metrics[f"dist/{c}_same"], ham[off & (s > 0)].mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(metrics[f"dist/{c}_other"], ham[off & (s == 0)].mean(),
                               rtol=1e-6)
  s_all = np.ones((8, 8))
  for c in SCHEMA.names:
    s_all *= LABELS[c][:, None] == LABELS[c][None, :]
  whole = _np_dch(codes, s_all, 5.0, 0.1)
  np.testing.assert_allclose(metrics["structured/whole"], whole, rtol=2e-4)
  np.testing.assert_allclose(loss, 0.7 * np.mean(per_char) + 0.4 * whole, rtol=2e-4)


def test_flat_code_needs_subcode_weight_zero():
  _, codes = _outputs(1)
  labels = {k: jnp.asarray(v) for k, v in LABELS.items()}
  kw = dict(schema=SCHEMA, step=0, key=jax.random.key(0))
  cfg = ml_collections.ConfigDict({"name": "structured_dpsh", "similarity": "all",
                                   "weights": {"eta": 0.2}})
  with pytest.raises(ValueError, match="model.head='structured'"):
    losses.LOSSES["structured_dpsh"]({"codes": jnp.asarray(codes)}, labels, cfg=cfg, **kw)
  cfg.weights.subcode = 0.0
  loss, metrics = losses.LOSSES["structured_dpsh"]({"codes": jnp.asarray(codes)}, labels,
                                                   cfg=cfg, **kw)
  assert set(metrics) == {"structured/whole"}
  want = losses.LOSSES["dpsh"]({"codes": jnp.asarray(codes)}, labels,
                               cfg=ml_collections.ConfigDict(
                                   {"name": "dpsh", "similarity": "all",
                                    "weights": {"eta": 0.2}}), **kw)[0]
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_weights_are_checked():
  cfg = config_lib.base_config().loss
  cfg.name = "structured"
  cfg.weights = ml_collections.ConfigDict({"subcodes": 1.0})
  with pytest.raises(ValueError, match="unknown keys.*subcodes"):
    losses.get_loss(cfg, SCHEMA)
  cfg.weights = ml_collections.ConfigDict({"whole": -1.0})
  outputs = {"codes": jnp.zeros((2, 4)), "subcodes": {}}
  with pytest.raises(ValueError, match="whole=-1.0 must be >= 0"):
    losses.get_loss(cfg, SCHEMA)(outputs, {k: jnp.asarray(v[:2]) for k, v in LABELS.items()},
                                 cfg=cfg, schema=SCHEMA, step=0, key=jax.random.key(0))


def test_config_arguments():
  c = _config("segments=8+16+24,pair_loss=dpsh,subcode=2.0")
  assert c.model.head == "structured" and c.model.bits == 48
  assert tuple(c.model.segments) == (8, 16, 24)
  assert c.loss.name == "structured_dpsh" and c.loss.weights.subcode == 2.0
  assert "modality>organ>disease" in c.eval.preferences
  losses.get_loss(c.loss, SCHEMA)  # the weights resolve against the registry
  flat = _config("head=flat")
  assert flat.model.head == "flat" and flat.model.bits == 48 and not flat.model.segments
  assert flat.loss.weights.subcode == 0.0
  with pytest.raises(config_lib.ConfigArgError, match="segments='16\\+16'"):
    _config("segments=16+16")
  with pytest.raises(config_lib.ConfigArgError, match="pair_loss"):
    _config("pair_loss=cauchy")


# ----------------------------------------------------------------------------- preferences
# Hand-made 12-bit codes, sub-codes modality | organ | disease of 4 bits each. The query is
# all +1; each gallery item's sub-code distances to it (d_modality, d_organ, d_disease):
ITEMS = {"A": (0, 4, 4), "B": (1, 0, 4), "C": (4, 1, 0), "D": (2, 2, 2), "E": (0, 0, 3),
         "F": (1, 0, 0)}
# The documented orderings (ties by gallery index: A < B < ... < F):
ORDERINGS = {
    "all": "FEBCDA",                         # plain sum: 1, 3, 5, 5, 6, 8
    "modality": "AEBFDC",                    # d_modality only: 0, 0, 1, 1, 2, 4
    "organ": "BEFCDA",                       # d_organ only: 0, 0, 0, 1, 2, 4
    "disease": "CFDEAB",                     # d_disease only: 0, 0, 2, 3, 4, 4
    "modality=2,organ=1,disease=0": "EBFADC",  # 2 d_mod + d_org: 0, 2, 2, 4, 6, 9
    # Lexicographic: A (0, 4, 4) precedes F (1, 0, 0) although its plain sum is 8 vs 1.
    "modality>organ>disease": "EAFBDC",
}


def _hand_codes():
  gallery = np.ones((len(ITEMS), 12), np.float32)
  for row, dists in enumerate(ITEMS.values()):
    for seg, d in enumerate(dists):
      gallery[row, 4 * seg:4 * seg + d] = -1.0
  return np.ones((1, 12), np.float32), gallery


@pytest.mark.parametrize("spec", sorted(ORDERINGS))
def test_preferences_produce_the_documented_orderings(spec):
  from dnh_jax import retrieval  # pylint: disable=g-import-not-at-top
  query, gallery = _hand_codes()
  pref = retrieval.parse_preference(spec, SCHEMA.names, (4, 4, 4))
  _, idx = retrieval.hamming_topk(retrieval.pack_codes(query), retrieval.pack_codes(gallery),
                                  len(ITEMS), segments=(4, 4, 4),
                                  weights=pref.segment_weights)
  names = list(ITEMS)
  assert "".join(names[i] for i in np.asarray(idx)[0]) == ORDERINGS[spec]


def test_evaluator_ranks_and_grades_by_preference():
  from dnh_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  query, gallery = _hand_codes()
  # Label 0 = agrees with the query on that characteristic exactly where the item's
  # sub-code distance is 0, so every single-characteristic preference ranks its relevant
  # items first (AP = 1).
  dists = np.array(list(ITEMS.values()))
  g_labels = {c: (dists[:, i] > 0).astype(np.int32) for i, c in enumerate(SCHEMA.names)}
  q_labels = {c: np.zeros(1, np.int32) for c in SCHEMA.names}
  ev = evaluator.Evaluator(SCHEMA, ks=(6,), relevance="all",
                           preferences=("modality", "organ", "disease", "all"),
                           segments=(4, 4, 4))
  res = ev.run(query, q_labels, gallery, g_labels)
  for c in ("modality", "organ", "disease"):
    assert res[f"{c}/mAP@6"] == pytest.approx(1.0)
    assert res[f"{c}/nDCG@6"] == pytest.approx(1.0)
  # "all": no item matches on every characteristic (AP 0); graded gains = number of
  # matches: F (2) is ranked first, then E (2), B (1), C (1), D (0), A (1) - not ideal.
  assert res["all/mAP@6"] == 0.0
  assert 0.8 < res["all/nDCG@6"] < 1.0
