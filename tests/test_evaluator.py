"""Code-level evaluation, relevance rules and preferences."""

import numpy as np
import pytest

from dnh_jax.data.schema import (Characteristic, Schema, chest_multilabel_schema,
                                 multi_characteristic_schema)
from dnh_jax.evaluation import metrics as M
from dnh_jax.evaluation.evaluator import Evaluator, evaluate_codes
from dnh_jax.evaluation.relevance import RELEVANCE, get_relevance
from dnh_jax.retrieval.codes import pack_codes
from dnh_jax.retrieval.hamming import hamming_distances, priority_weights
from dnh_jax.retrieval.preferences import parse_preference

SCHEMA = multi_characteristic_schema()


def _labels(rng, n):
  return {"modality": rng.integers(0, 2, n).astype(np.int32),
          "organ": rng.integers(0, 2, n).astype(np.int32),
          "disease": rng.integers(0, 3, n).astype(np.int32)}


def test_relevance_rules_by_hand():
  q = {"modality": np.array([0]), "organ": np.array([1]), "disease": np.array([2])}
  g = {"modality": np.array([0, 1, 0, 0]), "organ": np.array([1, 1, 0, 1]),
       "disease": np.array([2, 2, 2, 0])}
  rel, gains = RELEVANCE["all"](SCHEMA, q, g)
  # matches per item: (m, o, d) = (1,1,1), (0,1,1), (1,0,1), (1,1,0)
  assert rel.tolist() == [[True, False, False, False]]
  assert gains.tolist() == [[3, 2, 2, 2]]
  rel, gains = RELEVANCE["organ_disease"](SCHEMA, q, g)
  # organ and disease: 2; organ only: 1 (item 3); item 2 other organ: 0.
  assert gains.tolist() == [[2, 2, 0, 1]] and rel.tolist() == [[True, True, False, False]]
  pref = get_relevance(parse_preference("modality=2,organ=1", SCHEMA.names))
  rel, gains = pref(SCHEMA, q, g)
  # gain = 2*[modality] + 1*[organ]; relevant = modality and organ match.
  assert gains.tolist() == [[3, 1, 2, 3]] and rel.tolist() == [[True, False, False, True]]


def test_shared_multilabel_by_hand():
  schema = chest_multilabel_schema()
  v = schema["findings"].size
  hot = lambda *ids: np.isin(np.arange(v), ids).astype(np.uint8)
  q = {"findings": np.stack([hot(0, 1, 2)])}
  g = {"findings": np.stack([hot(0, 1, 2), hot(1, 5), hot(7), hot(0, 2)])}
  rel, gains = RELEVANCE["shared"](schema, q, g)
  assert gains.tolist() == [[3, 1, 0, 2]] and rel.tolist() == [[True, True, False, True]]
  # "all" on a multi-label characteristic: the same label set.
  rel, _ = RELEVANCE["all"](schema, q, g)
  assert rel.tolist() == [[True, False, False, False]]
  # Aligned form (labels already gathered per query) gives the same numbers.
  aligned = {"findings": g["findings"][None]}
  assert RELEVANCE["shared"](schema, q, aligned)[1].tolist() == [[3, 1, 0, 2]]


def test_unknown_rule_lists_valid_names():
  with pytest.raises(ValueError, match="organ_disease"):
    get_relevance("organs")
  with pytest.raises(ValueError, match="needs characteristics"):
    get_relevance("organ_disease", chest_multilabel_schema())


def test_preference_parsing():
  names, seg = SCHEMA.names, (16, 16, 16)
  p = parse_preference("all", names, seg)
  assert p.characteristic_weights == (1, 1, 1) and p.segment_weights == (1, 1, 1)
  p = parse_preference("organ", names, seg)
  assert p.characteristic_weights == (0, 1, 0) and p.preferred == ("organ",)
  p = parse_preference("modality=2,organ=1,disease=0", names, seg)
  assert p.characteristic_weights == (2, 1, 0) and p.segment_weights == (2, 1, 0)
  p = parse_preference("organ>modality>disease", names, seg)
  # Gains lexicographic over matches (4, 2, 1); segments by priority_weights (289, 17, 1).
  assert p.characteristic_weights == (2, 4, 1)
  assert p.segment_weights == (17, 289, 1)
  assert parse_preference("organ>disease", names, seg).segment_weights == (
      0,) + priority_weights((16, 16))
  assert parse_preference("organ", names).segment_weights is None
  for bad, match in (("organs", "unknown characteristic"), ("organ=x", "integer"),
                     ("organ>organ", "twice"), ("organ=0", "positive"),
                     ("organ=-1", "negative")):
    with pytest.raises(ValueError, match=match):
      parse_preference(bad, names, seg)
  with pytest.raises(ValueError, match="one per characteristic"):
    parse_preference("all", names, (16, 16))


@pytest.mark.parametrize("ties", ["index", "expected", "optimistic", "pessimistic"])
@pytest.mark.parametrize("rule", ["all", "organ_disease"])
def test_code_level_equals_dense(ties, rule):
  rng = np.random.default_rng(0)
  qc, gc = rng.standard_normal((30, 8)), rng.standard_normal((300, 8))  # heavy ties
  ql, gl = _labels(rng, 30), _labels(rng, 300)
  d = hamming_distances(pack_codes(qc), pack_codes(gc))
  rel, gains = get_relevance(rule)(SCHEMA, ql, gl)
  out = evaluate_codes(qc, ql, gc, gl, schema=SCHEMA, relevance=rule, ks=(10, 100, 1000),
                       ties=ties, whole_gallery=True, pr_curve=True, query_chunk=8)
  for k in (10, 100, 1000):
    np.testing.assert_allclose(out[f"AP@{k}"], M.average_precision(d, rel, k=k, ties=ties),
                               atol=1e-9)
    np.testing.assert_allclose(out[f"nDCG@{k}"], M.ndcg(d, gains, k=k, ties=ties),
                               atol=1e-9)
    np.testing.assert_allclose(out[f"ACG@{k}"], M.acg(d, gains, k=k, ties=ties), atol=1e-9)
    np.testing.assert_allclose(out[f"wAP@{k}"], M.weighted_map(d, gains, k=k, ties=ties),
                               atol=1e-9)
  np.testing.assert_allclose(out["AP"], M.average_precision(d, rel, ties=ties), atol=1e-9)
  np.testing.assert_allclose(out["P@r2"], M.precision_at_radius(d, rel), atol=1e-12)
  prec, rec = M.pr_curve(d, rel, max_radius=8)
  np.testing.assert_allclose(out["pr_precision"], prec, atol=1e-12)
  np.testing.assert_allclose(out["pr_recall"], rec, atol=1e-12)


def test_multilabel_weighted_preference_and_packed_input():
  rng = np.random.default_rng(1)
  schema = Schema((Characteristic("organ", ("a", "b")),
                   Characteristic("findings", tuple("uvwxyz"), "multi")))
  lab = lambda n: {"organ": rng.integers(0, 2, n).astype(np.int32),
                   "findings": (rng.random((n, 6)) < 0.3).astype(np.uint8)}
  ql, gl = lab(20), lab(200)
  qc, gc = rng.standard_normal((20, 12)), rng.standard_normal((200, 12))
  pref = parse_preference("organ>findings", schema.names, (4, 8))
  d = hamming_distances(pack_codes(qc), pack_codes(gc), segments=(4, 8),
                        weights=pref.segment_weights)
  rel, gains = get_relevance(pref)(schema, ql, gl)
  out = evaluate_codes(pack_codes(qc), ql, pack_codes(gc), gl, schema=schema,
                       relevance=pref, ks=(5, 50), segments=(4, 8), num_bits=12,
                       weights=pref.segment_weights, radius=None)
  for k in (5, 50):
    np.testing.assert_allclose(out[f"AP@{k}"], M.average_precision(d, rel, k=k), atol=1e-9)
    np.testing.assert_allclose(out[f"nDCG@{k}"], M.ndcg(d, gains, k=k), atol=1e-9)
  out = evaluate_codes(qc, ql, gc, gl, schema=schema, relevance="shared", ks=(50,))
  _, gains = get_relevance("shared")(schema, ql, gl)
  d = hamming_distances(pack_codes(qc), pack_codes(gc))
  np.testing.assert_allclose(out["wAP@50"], M.weighted_map(d, gains, k=50), atol=1e-9)


def test_evaluator_keys_and_values():
  rng = np.random.default_rng(2)
  qc, gc = rng.standard_normal((25, 12)), rng.standard_normal((150, 12))
  ql, gl = _labels(rng, 25), _labels(rng, 150)
  ql["disease"][0] = 2
  gl["disease"][gl["disease"] == 2] = 1  # query 0's combination is absent from the gallery
  ev = Evaluator(SCHEMA, ks=(10, 100), preferences=("organ", "modality>organ>disease"),
                 segments=(4, 4, 4), whole_gallery=True)
  res = ev.run(qc, ql, gc, gl)
  for k in (10, 100):
    for name in ("mAP", "nDCG", "ACG", "wMAP"):
      assert f"{name}@{k}" in res
    for pref in ("organ", "modality>organ>disease"):
      assert f"{pref}/mAP@{k}" in res and f"{pref}/nDCG@{k}" in res
  assert {"P@r2", "mAP", "frac_no_relevant"} <= set(res)
  assert all(isinstance(v, float) for v in res.values())
  d = hamming_distances(pack_codes(qc), pack_codes(gc))
  rel, _ = RELEVANCE["all"](SCHEMA, ql, gl)
  # Queries without a relevant item count as AP 0 in the mean.
  assert res["mAP@100"] == pytest.approx(M.average_precision(d, rel, k=100).mean(), abs=1e-12)
  assert res["frac_no_relevant"] == pytest.approx(np.mean(~rel.any(axis=1)))
  assert res["frac_no_relevant"] >= 1 / 25
  pref = parse_preference("organ", SCHEMA.names, (4, 4, 4))
  d = hamming_distances(pack_codes(qc), pack_codes(gc), segments=(4, 4, 4),
                        weights=pref.segment_weights)
  rel, _ = get_relevance(pref)(SCHEMA, ql, gl)
  assert res["organ/mAP@10"] == pytest.approx(M.average_precision(d, rel, k=10).mean())


def test_evaluator_input_errors():
  rng = np.random.default_rng(3)
  ev = Evaluator(SCHEMA, ks=(5,))
  qc, gc = rng.standard_normal((4, 8)), rng.standard_normal((20, 8))
  ql, gl = _labels(rng, 4), _labels(rng, 20)
  with pytest.raises(ValueError, match="missing labels"):
    ev.run(qc, {"organ": ql["organ"]}, gc, gl)
  with pytest.raises(ValueError, match=r"gallery_labels\['organ'\]"):
    ev.run(qc, ql, gc, dict(gl, organ=gl["organ"][:5]))
  with pytest.raises(ValueError, match="ties must be one of"):
    Evaluator(SCHEMA, ties="random")
  with pytest.raises(ValueError, match="one per characteristic"):
    Evaluator(SCHEMA, segments=(8, 8))
