"""OPHash: pair typing, every loss term against a NumPy reference, the gradient-reversal
min-max, and a quick training run whose codes order type1 < type2 < type3."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.losses import ophash

SCHEMA = schema_lib.multi_characteristic_schema()
# Six images: organ and disease ids chosen so every pair type occurs.
ORGAN = np.array([0, 0, 0, 1, 1, 2], np.int32)
DISEASE = np.array([0, 0, 1, 3, 3, 6], np.int32)


def _np_distance(h):
  u = h / np.linalg.norm(h, axis=1, keepdims=True)
  return np.maximum(0.5 * h.shape[1] * (1.0 - u @ u.T), 0.0)


def _np_bce(d, s, gamma):
  p = gamma / (gamma + d)
  with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal (d = 0) is masked
    return -(s * np.log(p) + (1.0 - s) * np.log(1.0 - p))


def _codes(seed=0, batch=6, bits=8):
  return np.tanh(np.random.default_rng(seed).normal(size=(batch, bits))).astype(np.float32)


def _cfg(**weights):
  cfg = config_lib.base_config().loss  # every field the loss reads, with its default
  cfg.name, cfg.weights = "ophash", ml_collections.ConfigDict(weights)
  return cfg


def test_pair_types_by_hand():
  types = np.asarray(ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE)))
  # Images 0, 1 share organ 0 and disease 0; image 2 is organ 0 with disease 1; 3 and 4
  # share organ 1 and disease 3; 5 is alone in organ 2.
  expected = np.array([[1, 1, 2, 3, 3, 3],
                       [1, 1, 2, 3, 3, 3],
                       [2, 2, 1, 3, 3, 3],
                       [3, 3, 3, 1, 1, 3],
                       [3, 3, 3, 1, 1, 3],
                       [3, 3, 3, 3, 3, 1]])
  np.testing.assert_array_equal(types, expected)
  np.testing.assert_array_equal(ophash.semantic_similarity(types), expected <= 2)
  np.testing.assert_array_equal(ophash.relational_similarity(types), expected == 1)
  np.testing.assert_array_equal(ophash.target_distances(types, 8),
                                np.select([expected == 1, expected == 2], [0.0, 4.0], 8.0))


def test_pair_typing_checks_the_schema():
  labels = {"organ": jnp.asarray(ORGAN), "disease": jnp.asarray(DISEASE)}
  with pytest.raises(ValueError, match="loss.organ='organs'.*modality"):
    ophash.batch_pair_types(labels, SCHEMA, "organs", "disease")
  multi = schema_lib.chest_multilabel_schema()
  with pytest.raises(ValueError, match="multi-label"):
    ophash.batch_pair_types({"findings": jnp.zeros((6, 13))}, multi, "findings", "findings")


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_semantic_and_relational_terms_match_numpy(gamma):
  h = _codes()
  types = np.asarray(ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE)))
  d = _np_distance(h.astype(np.float64))
  off = ~np.eye(6, dtype=bool)
  s = (types <= 2).astype(float)
  r = (types == 1).astype(float)
  want_j1 = _np_bce(d, s, gamma)[off].mean()
  want_j2 = _np_bce(d, r, gamma)[off & (s == 1)].mean()
  d_jax = ophash.common.relaxed_hamming(jnp.asarray(h))
  np.testing.assert_allclose(ophash.semantic_loss(d_jax, jnp.asarray(types), gamma), want_j1,
                             rtol=1e-4)
  np.testing.assert_allclose(ophash.relational_loss(d_jax, jnp.asarray(types), gamma),
                             want_j2, rtol=1e-4)


def test_target_distance_and_classification_match_numpy():
  h = _codes(1)
  bits = h.shape[1]
  types = np.asarray(ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE)))
  target = np.select([types == 1, types == 2], [0.0, bits / 2], bits)
  d = _np_distance(h.astype(np.float64))
  want = np.log(np.cosh((target - d) / bits))[~np.eye(6, dtype=bool)].mean()
  got = ophash.target_distance_loss(ophash.common.relaxed_hamming(jnp.asarray(h)),
                                    jnp.asarray(types), bits)
  np.testing.assert_allclose(got, want, rtol=1e-4)

  logits = np.random.default_rng(2).normal(size=(6, 5))
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  want_ce = -logp[np.arange(6), ORGAN].mean()
  np.testing.assert_allclose(ophash.organ_classification_loss(jnp.asarray(logits),
                                                              jnp.asarray(ORGAN)),
                             want_ce, rtol=1e-5)


def test_pair_type_distances_match_numpy():
  h = _codes(3)
  types = np.asarray(ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE)))
  b = np.where(h >= 0, 1, -1)
  ham = (b[:, None, :] != b[None, :, :]).sum(-1)
  off = ~np.eye(6, dtype=bool)
  got = ophash.pair_type_distances(jnp.asarray(h), jnp.asarray(types))
  for t in (1, 2, 3):
    np.testing.assert_allclose(got[f"dist_type{t}"], ham[off & (types == t)].mean(), rtol=1e-6)
  # A batch without type-2 pairs reports NaN for type 2, not a distance of 0.
  none = ophash.pair_type_distances(jnp.asarray(h[:2]), jnp.asarray(types[:2, :2]))
  assert np.isnan(none["dist_type2"]) and none["dist_type1"] >= 0


def _np_discriminator(params, a, b):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  w1 = np.concatenate([p["first"], p["second"]])            # [2K, W]: rows of h_i, then h_j
  hidden = np.maximum(np.concatenate([a, b]) @ w1 + p["bias"], 0.0)
  return hidden @ p["out"] + p["out_bias"]


def test_adversarial_term_matches_numpy():
  h = _codes(4)
  types = np.asarray(ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE)))
  params = ophash.init_discriminator(jax.random.key(0), h.shape[1], width=16)
  params["out_bias"] = jnp.float32(0.3)  # break the symmetry at zero bias
  losses, correct = [], []
  for i in range(6):
    for j in range(i + 1, 6):
      if types[i, j] != 1:
        continue
      x_ij = _np_discriminator(params, h[i], h[j])
      x_ji = _np_discriminator(params, h[j], h[i])
      losses.append(0.5 * (np.log1p(np.exp(-x_ij)) + np.log1p(np.exp(x_ji))))
      correct.append(0.5 * (float(x_ij > 0) + float(x_ji < 0)))
  assert len(losses) == 2  # pairs (0, 1) and (3, 4)
  loss, accuracy = ophash.adversarial_loss(params, jnp.asarray(h), jnp.asarray(types))
  np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(accuracy, np.mean(correct), rtol=1e-6)


def test_gradient_reversal_makes_a_real_min_max():
  h = jnp.asarray(_codes(5))
  types = ophash.pair_types(jnp.asarray(ORGAN), jnp.asarray(DISEASE))
  params = ophash.init_discriminator(jax.random.key(1), h.shape[1], width=16)

  def reversed_loss(p, codes, scale):
    return ophash.adversarial_loss(p, codes, types, scale)[0]

  def plain_loss(p, codes):
    return ophash.adversarial_loss(p, codes, types, 0.0)[0]

  g_params, g_codes = jax.grad(reversed_loss, argnums=(0, 1))(params, h, 0.7)
  g_params_plain, g_codes_plain = jax.grad(lambda p, c: reversed_loss(p, c, -1.0),
                                           argnums=(0, 1))(params, h)
  # The discriminator sees the true gradient; the codes see -lambda times it.
  for k in params:
    np.testing.assert_allclose(g_params[k], g_params_plain[k], rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(g_codes, -0.7 * g_codes_plain, rtol=1e-5, atol=1e-8)
  # One descent step on the summed objective: the discriminator's loss goes down when it
  # moves, and up when the encoder (codes) moves - opposite objectives.
  before = plain_loss(params, h)
  moved_d = jax.tree.map(lambda p, g: p - 0.05 * g, params, g_params)
  assert plain_loss(moved_d, h) < before
  assert plain_loss(params, h - 0.05 * g_codes) > before


def test_reversal_scale_ramp():
  assert float(ophash.reversal_scale(5, 0)) == 1.0
  assert float(ophash.reversal_scale(0, 100)) == 0.0
  np.testing.assert_allclose(ophash.reversal_scale(50, 100), 2 / (1 + np.exp(-5)) - 1,
                             rtol=1e-6)
  np.testing.assert_allclose(ophash.reversal_scale(500, 100), 2 / (1 + np.exp(-10)) - 1,
                             rtol=1e-6)


def _outputs_and_labels(seed=6):
  h = _codes(seed)
  logits = np.random.default_rng(seed).normal(size=(6, 5)).astype(np.float32)
  outputs = {"codes": jnp.asarray(h), "logits": {"organ": jnp.asarray(logits)}}
  labels = {"modality": jnp.zeros(6, jnp.int32), "organ": jnp.asarray(ORGAN),
            "disease": jnp.asarray(DISEASE)}
  return outputs, labels


def test_loss_is_the_weighted_sum_of_the_switched_on_terms():
  outputs, labels = _outputs_and_labels()
  cfg = _cfg(organ_classification=0.3, semantic=0.5, relational=0.7, adversarial=0.2,
             target_distance=2.0)
  params = ophash.ophash_loss.init_params(jax.random.key(0), outputs, cfg=cfg)
  loss, metrics = ophash.ophash_loss(outputs, labels, cfg=cfg, schema=SCHEMA, step=3,
                                     key=jax.random.key(1), params=params)
  want = (0.3 * metrics["ophash/organ_classification"] + 0.5 * metrics["ophash/semantic"]
          + 0.7 * metrics["ophash/relational"] + 0.2 * metrics["ophash/adversarial"]
          + 2.0 * metrics["ophash/target_distance"])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  for t in (1, 2, 3):
    assert f"dist_type{t}" in metrics and f"pairs/type{t}" in metrics
  np.testing.assert_allclose(sum(metrics[f"pairs/type{t}"] for t in (1, 2, 3)), 1.0,
                             rtol=1e-6)

  off = _cfg(organ_classification=0.0, relational=0.0)
  assert ophash.ophash_loss.init_params(jax.random.key(0), outputs, cfg=off) == {}
  loss, metrics = ophash.ophash_loss(outputs, labels, cfg=off, schema=SCHEMA, step=0,
                                     key=None, params={})
  assert set(k for k in metrics if k.startswith("ophash/")) == {"ophash/semantic"}
  np.testing.assert_allclose(loss, 0.5 * metrics["ophash/semantic"], rtol=1e-6)


def test_bad_weights_and_missing_pieces_raise():
  outputs, labels = _outputs_and_labels()
  kw = dict(schema=SCHEMA, step=0, key=None, params={})
  with pytest.raises(ValueError, match="unknown keys.*'semantik'"):
    ophash.ophash_loss(outputs, labels, cfg=_cfg(semantik=1.0), **kw)
  with pytest.raises(ValueError, match="relational=-1.0 must be"):
    ophash.ophash_loss(outputs, labels, cfg=_cfg(relational=-1.0), **kw)
  with pytest.raises(ValueError, match="no discriminator parameters"):
    ophash.ophash_loss(outputs, labels, cfg=_cfg(adversarial=1.0), **kw)
  with pytest.raises(ValueError, match="model.classifier=True"):
    ophash.ophash_loss({"codes": outputs["codes"]}, labels, cfg=_cfg(), **kw)


def test_gradients_pull_type1_together_and_push_type3_apart():
  """A few hundred gradient steps on free codes reproduce the method's distance ordering."""
  outputs, labels = _outputs_and_labels(7)
  cfg = _cfg(organ_classification=0.0)
  z = jnp.arctanh(outputs["codes"] * 0.5)

  def objective(z):
    return ophash.ophash_loss({"codes": jnp.tanh(z)}, labels, cfg=cfg, schema=SCHEMA,
                              step=0, key=None)

  grad = jax.jit(jax.grad(lambda z: objective(z)[0]))
  for _ in range(300):
    z = z - 0.5 * grad(z)
  _, metrics = objective(z)
  assert metrics["dist_type1"] < metrics["dist_type2"] < metrics["dist_type3"]


def _config(arg=None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location("ophash_cfg",
                                                os.path.join(root, "configs", "ophash.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_config_switches_set_the_term_weights():
  from dnh_jax import config_lib, losses  # pylint: disable=g-import-not-at-top
  c = _config()
  assert c.loss.name == "ophash" and c.model.bits == 48
  assert c.eval.relevance == "organ_disease" and c.train.best_metric.startswith("val/")
  w = c.loss.weights
  assert (w.organ_classification, w.semantic, w.relational, w.adversarial,
          w.target_distance, c.loss.quantization) == (1.0, 0.5, 0.5, 0.0, 0.0, 0.0)
  c = _config("bits=16,relational=off,adversarial=on,adv_weight=0.3,target=on,"
              "quantization=on,classification=off,a1=0.7")
  w = c.loss.weights
  assert c.model.bits == 16
  assert (w.organ_classification, w.semantic, w.relational, w.adversarial,
          w.target_distance, c.loss.quantization) == (0.0, 0.7, 0.0, 0.3, 5.0, 0.1)
  loss_fn = losses.get_loss(c.loss, SCHEMA)
  assert hasattr(loss_fn, "init_params")  # the trainer will train the discriminator
  params = loss_fn.init_params(jax.random.key(0), {"codes": jnp.zeros((2, 16))})
  assert params["discriminator"]["first"].shape == (16, 64)
  with pytest.raises(config_lib.ConfigArgError, match="relational"):
    _config("relational=maybe")
  with pytest.raises(config_lib.ConfigArgError, match="bits"):
    _config("bits=20")


def test_quick_run_orders_pair_type_distances(tmp_path):
  """A short OPHash run on easy MedPhantom data: type1 < type2 < type3 in Hamming bits.

  Easy = difficulty 0 (textbook lesion signs, no noise or pose variation) and no
  augmentation, so the distance ordering - the method's claim - appears within a few dozen
  steps; on the default difficulty it needs the longer runs of the closing note.
  """
  from dnh_jax import train  # pylint: disable=g-import-not-at-top
  config = _config("quick,bits=16,steps=40")
  config.data.difficulty = 0.0
  config.data.augment = False
  config.data.num_examples = 500
  config.train.eval_every = config.train.checkpoint_every = 40
  results = train.train_and_evaluate(config, str(tmp_path))
  # Graded relevance 2/1/0 evaluated on the test split.
  assert 0.0 < results["test/nDCG@10"] <= 1.0 and 0.0 < results["test/mAP@100"] <= 1.0
  with open(tmp_path / "logs" / "metrics.jsonl") as f:
    rows = [r for r in map(json.loads, f) if "train/dist_type1" in r]
  assert [r["step"] for r in rows][-3:] == [20, 30, 40]
  # Mean over the last three logged batches (about 3 x 60 type-1 pairs).
  mean = {t: np.mean([r[f"train/dist_type{t}"] for r in rows[-3:]]) for t in (1, 2, 3)}
  assert mean[1] < mean[2] < mean[3], mean
  assert mean[3] > 16 / 4  # other organs are far apart, not just ordered
