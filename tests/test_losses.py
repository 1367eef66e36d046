"""Loss library: shared pieces on hand-computed values, each baseline against a NumPy
reference written here (explicit loops over pairs, independent of the library's matrix
code), finite gradients, and the uniform wrapper."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.losses import common, pairs, pairwise, pointwise, registry

SINGLE = schema_lib.Schema((
    schema_lib.Characteristic("modality", ("CT", "MRI", "XR")),
    schema_lib.Characteristic("organ", ("brain", "chest")),
))
MULTI = schema_lib.Schema((
    schema_lib.Characteristic("findings", ("a", "b", "c", "d"), schema_lib.MULTI),))

# Six images: (modality, organ) = (CT, brain) (CT, brain) (MRI, brain) (XR, chest)
# (CT, chest) (MRI, brain).
SINGLE_LABELS = {"modality": np.array([0, 0, 1, 2, 0, 1], np.int32),
                 "organ": np.array([0, 0, 0, 1, 1, 0], np.int32)}
MULTI_LABELS = {"findings": np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0],
                                      [0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]], np.uint8)}


def _jit(fn, **static):
  """fn with keyword arguments bound, jitted: one compile instead of eager op-by-op."""
  return jax.jit(functools.partial(fn, **static))


def _codes(batch=6, bits=8, seed=0, spread=1.5):
  z = np.random.default_rng(seed).normal(size=(batch, bits)) * spread
  return z.astype(np.float32), np.tanh(z).astype(np.float32)


def _np_sign(x):
  return np.where(x >= 0, 1.0, -1.0)


def _np_softplus(x):
  return np.log1p(np.exp(-abs(x))) + max(x, 0.0)


def _offdiag_mean(fn, batch):
  return np.mean([fn(i, j) for i in range(batch) for j in range(batch) if i != j])


# ----------------------------------------------------------------------------------------
# Shared pieces, hand-computed.

def test_relaxed_hamming_hand_values():
  h = jnp.array([[1, 1, 1, 1], [1, 1, -1, -1], [-1, -1, -1, -1], [0.5, 0.5, 0.5, 0.5]],
                jnp.float32)
  d = np.asarray(_jit(common.relaxed_hamming)(h))
  # cos(h0, h1) = 0 -> 2; opposite codes -> K = 4; h3 is parallel to h0 -> 0.
  np.testing.assert_allclose(d[0], [0, 2, 4, 0], atol=1e-6)
  np.testing.assert_allclose(d[1], [2, 0, 2, 2], atol=1e-6)
  assert (d >= 0).all()  # Clipped: rounding never gives a negative distance.


def test_relaxed_hamming_equals_hamming_on_binary_codes():
  b = _np_sign(np.random.default_rng(1).normal(size=(5, 16))).astype(np.float32)
  hamming = (16 - b @ b.T) / 2
  np.testing.assert_allclose(_jit(common.relaxed_hamming)(jnp.asarray(b)), hamming, atol=1e-4)


def test_cauchy_pieces_hand_values():
  np.testing.assert_allclose(common.cauchy_similarity(jnp.array([0.0, 1.0, 3.0]), 1.0),
                             [1.0, 0.5, 0.25])
  # s=1, d=1, gamma=1: -log 0.5; s=0, d=1: -log(1 - 0.5); s=0, d=3: -log(0.75).
  ce = common.cauchy_cross_entropy(jnp.array([1.0, 1.0, 3.0]), jnp.array([1.0, 0.0, 0.0]),
                                   gamma=1.0, eps=0.0)
  np.testing.assert_allclose(ce, [math.log(2), math.log(2), -math.log(0.75)], rtol=1e-6)


def test_log_cosh_and_regression_hand_values():
  x = np.array([0.0, 0.5, -2.0, 100.0], np.float32)
  want = np.log(np.cosh(x[:3]))
  # Stable where cosh overflows float32: log cosh(100) = 100 - log 2.
  np.testing.assert_allclose(_jit(common.log_cosh)(x), [*want, 100 - math.log(2)],
                             rtol=1e-6, atol=1e-7)
  d = jnp.array([[0.0, 2.0], [2.0, 0.0]])
  target = jnp.array([[0.0, 4.0], [4.0, 0.0]])
  # Off-diagonal pairs only: both have (4 - 2)/4 = 0.5.
  value = _jit(common.target_distance_regression, bits=4)(d, target,
                                                         mask=common.off_diagonal(2))
  np.testing.assert_allclose(value, math.log(math.cosh(0.5)), rtol=1e-6)


def test_quantization_penalty_hand_values():
  h = jnp.array([[0.0, 1.0, -1.0, 0.5]])
  want = (math.log(math.cosh(1.0)) + math.log(math.cosh(0.5))) / 4
  np.testing.assert_allclose(_jit(common.quantization_penalty)(h), want, rtol=1e-6)
  # sign(0) = +1: the error of 0 is 1; of 0.5 is 0.25.
  np.testing.assert_allclose(common.quantization_error(h), (1 + 0.25) / 4, rtol=1e-6)


def test_masked_mean_empty_mask_is_zero():
  assert float(common.masked_mean(jnp.ones((3, 3)), jnp.zeros((3, 3)))) == 0.0


# ----------------------------------------------------------------------------------------
# Pair similarities and class targets.

def test_pair_similarity_rules():
  s_all = np.asarray(pairs.pair_similarity(SINGLE_LABELS, SINGLE, "all"))
  want = np.zeros((6, 6))
  for group in ([0, 1], [2, 5], [3], [4]):
    for i in group:
      for j in group:
        want[i, j] = 1
  np.testing.assert_array_equal(s_all, want)
  s_organ = np.asarray(pairs.pair_similarity(SINGLE_LABELS, SINGLE, "organ"))
  np.testing.assert_array_equal(s_organ, SINGLE_LABELS["organ"][:, None]
                                == SINGLE_LABELS["organ"][None, :])
  s_shared = np.asarray(pairs.pair_similarity(MULTI_LABELS, MULTI, "shared"))
  # Image 3 has no finding: similar to nothing, not even itself.
  np.testing.assert_array_equal(s_shared[3], np.zeros(6))
  np.testing.assert_array_equal(s_shared[0], [1, 1, 0, 0, 1, 1])
  np.testing.assert_array_equal(s_shared[2], [0, 0, 1, 0, 0, 1])


def test_pair_similarity_bad_rule_lists_valid_rules():
  with pytest.raises(ValueError, match=r"valid rules: \['all', 'modality', 'organ'\]"):
    pairs.pair_similarity(SINGLE_LABELS, SINGLE, "disease")
  with pytest.raises(ValueError, match="valid rules"):
    pairs.pair_similarity(MULTI_LABELS, MULTI, "all")


def test_class_ids_mixed_radix_and_targets():
  # id = modality * 2 + organ.
  np.testing.assert_array_equal(pairs.class_ids(SINGLE_LABELS, SINGLE), [0, 0, 2, 5, 1, 2])
  assert pairs.num_classes(SINGLE, "all") == 6
  assert pairs.num_classes(SINGLE, "modality") == 3
  assert pairs.num_classes(MULTI, "shared") == 4
  t = np.asarray(pairs.class_targets(SINGLE_LABELS, SINGLE, "all"))
  np.testing.assert_array_equal(t.argmax(-1), [0, 0, 2, 5, 1, 2])
  np.testing.assert_array_equal(t.sum(-1), np.ones(6))
  np.testing.assert_array_equal(pairs.class_targets(MULTI_LABELS, MULTI, "findings"),
                                MULTI_LABELS["findings"])


def test_soft_similarity_hand_values():
  s = np.asarray(pairs.soft_similarity(MULTI_LABELS, MULTI, "shared"))
  np.testing.assert_allclose(s[0, 1], 1 / math.sqrt(2), rtol=1e-6)  # {a,b} vs {a}
  np.testing.assert_allclose(s[0, 5], 1 / math.sqrt(6), rtol=1e-6)  # {a,b} vs {b,c,d}
  np.testing.assert_allclose(s[0, 4], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(s[3], np.zeros(6))
  # Single-label: the fraction of matching characteristics (image 0 vs 2: organ only).
  s1 = np.asarray(pairs.soft_similarity(SINGLE_LABELS, SINGLE, "all"))
  np.testing.assert_allclose(s1[0, [1, 2, 3, 4]], [1.0, 0.5, 0.0, 0.5], rtol=1e-6)


def test_labels_with_wrong_rank_are_rejected():
  with pytest.raises(ValueError, match=r"labels\['organ'\].*must have 1 dims"):
    pairs.pair_similarity({"modality": SINGLE_LABELS["modality"],
                           "organ": np.zeros((6, 2), np.int32)}, SINGLE, "all")


# ----------------------------------------------------------------------------------------
# Class codes.

@pytest.mark.parametrize("order", [1, 2, 4, 8, 12, 16, 20, 24, 32, 44, 48, 64])
def test_hadamard_is_hadamard(order):
  h = pointwise.hadamard(order).astype(np.int64)
  np.testing.assert_array_equal(h @ h.T, order * np.eye(order))


def test_hadamard_unknown_order_is_none():
  assert pointwise.hadamard(28) is None
  assert pointwise.hadamard(6) is None


def test_hash_centers_orthogonal_then_bernoulli():
  c = pointwise.hash_centers(20, 16)
  hamming = (16 - c @ c.T) / 2
  off = hamming[~np.eye(20, dtype=bool)]
  assert set(np.unique(off)) <= {8.0, 16.0}  # Rows of [H; -H]: K/2 apart, or K.
  big = pointwise.hash_centers(40, 16)  # 40 > 2K: seeded Bernoulli, deterministic.
  assert set(np.unique(big)) == {-1.0, 1.0}
  pointwise.hash_centers.cache_clear()
  np.testing.assert_array_equal(big, pointwise.hash_centers(40, 16))
  # Distinct rows even when collisions are likely (40 classes in 2^5 = 32 codes is not).
  assert len({r.tobytes() for r in pointwise.hash_centers(30, 5)}) == 30
  with pytest.raises(ValueError, match="40 classes cannot have distinct 5-bit"):
    pointwise.hash_centers(40, 5)


def test_multilabel_centers_sign_of_sum_with_fixed_ties():
  centers = jnp.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]], jnp.float32)
  targets = jnp.array([[1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 0]], jnp.float32)
  out = np.asarray(pointwise.multilabel_centers(targets, centers))
  tie = pointwise._tie_breaker(4)
  np.testing.assert_array_equal(out[0], [1, 1, -1, -1])
  np.testing.assert_array_equal(out[1], [1, -1, -1, -1])
  np.testing.assert_array_equal(out[2], [1, tie[1], tie[2], -1])  # sums 2, 0, 0, -2
  np.testing.assert_array_equal(out[3], tie)


# ----------------------------------------------------------------------------------------
# Each baseline against a NumPy reference.

def _s_all():
  return np.asarray(pairs.pair_similarity(SINGLE_LABELS, SINGLE, "all"))


def test_dpsh_matches_reference():
  _, h = _codes()
  s = _s_all()
  nll = _offdiag_mean(lambda i, j: _np_softplus(0.5 * h[i] @ h[j]) - s[i, j] * 0.5 * h[i] @ h[j],
                      6)
  want = nll + 0.3 * np.mean((h - _np_sign(h)) ** 2)
  np.testing.assert_allclose(_jit(pairwise.dpsh_loss, eta=0.3)(h, s), want, rtol=1e-5)


def test_dpsh_cosine_and_balance_match_reference():
  _, h = _codes()
  s = _s_all()
  unit = h / np.linalg.norm(h, axis=-1, keepdims=True)
  theta = 0.5 * h.shape[-1] * unit @ unit.T
  off = ~np.eye(6, dtype=bool)
  n_sim = (s * off).sum()
  w = np.where(s > 0.5, off.sum() / n_sim, off.sum() / (off.sum() - n_sim))
  nll = (w * (np.logaddexp(0.0, theta) - s * theta))[off].mean()
  want = nll + 0.1 * np.mean((h - _np_sign(h)) ** 2)
  got = _jit(pairwise.dpsh_loss, eta=0.1, balance=1.0, cosine=True)(h, s)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Scaling every code leaves the cosine pair term unchanged: no gradient along h.
  grad = jax.grad(lambda x: pairwise.dpsh_loss(x, s, eta=0.0, cosine=True))(jnp.asarray(h))
  np.testing.assert_allclose(np.sum(np.asarray(grad) * h, axis=-1), 0.0, atol=1e-5)


def test_dsh_balance_matches_reference():
  _, h = _codes()
  s = _s_all()
  off = ~np.eye(6, dtype=bool)
  n_sim = (s * off).sum()
  w = np.where(s > 0.5, off.sum() / n_sim, off.sum() / (off.sum() - n_sim))
  d = ((h[:, None] - h[None]) ** 2).sum(-1)
  pair = 0.5 * s * d + 0.5 * (1 - s) * np.maximum(16 - d, 0)
  want = (w * pair)[off].mean() + 0.01 * np.mean(np.abs(np.abs(h) - 1).sum(-1))
  np.testing.assert_allclose(_jit(pairwise.dsh_loss, balance=1.0)(h, s), want, rtol=1e-5)


def test_dsh_matches_reference():
  _, h = _codes()
  s = _s_all()
  m = 2 * 8

  def pair(i, j):
    d = np.sum((h[i] - h[j]) ** 2)
    return 0.5 * s[i, j] * d + 0.5 * (1 - s[i, j]) * max(m - d, 0)

  want = _offdiag_mean(pair, 6) + 0.05 * np.mean(np.abs(np.abs(h) - 1).sum(-1))
  np.testing.assert_allclose(_jit(pairwise.dsh_loss, alpha=0.05)(h, s), want, rtol=1e-5)


def test_hashnet_matches_reference_and_scale_schedule():
  z, _ = _codes()
  s = _s_all()
  beta, alpha = 1.7, 10.0
  h = np.tanh(beta * z)
  n = 30
  n1 = sum(s[i, j] for i in range(6) for j in range(6) if i != j)

  def pair(i, j):
    theta = alpha / 8 * h[i] @ h[j]
    w = n / n1 if s[i, j] else n / (n - n1)
    return w * (_np_softplus(theta) - s[i, j] * theta)

  np.testing.assert_allclose(_jit(pairwise.hashnet_loss, alpha=alpha)(z, s, scale=beta),
                             _offdiag_mean(pair, 6), rtol=1e-5)
  # beta = (1 + 0.005 t)^0.5 with t rounded down to a multiple of 200.
  scale = jax.jit(jax.vmap(pairwise.hashnet_scale))(jnp.array([0, 399, 400]))
  np.testing.assert_allclose(scale, [1.0, math.sqrt(2.0), math.sqrt(3.0)], rtol=1e-6)


def test_dch_matches_reference():
  _, h = _codes()
  s = _s_all()
  gamma, lam, k = 2.0, 0.5, 8
  n = 30
  n1 = sum(s[i, j] for i in range(6) for j in range(6) if i != j)

  def dist(a, b):
    return k / 2 * (1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

  def pair(i, j):
    d = dist(h[i], h[j])
    p = gamma / (gamma + d)
    w = n / n1 if s[i, j] else n / (n - n1)
    return w * (-s[i, j] * np.log(p) - (1 - s[i, j]) * np.log(1 - p))

  quant = np.mean([np.log(1 + dist(np.abs(x), np.ones(k)) / gamma) for x in h])
  np.testing.assert_allclose(_jit(pairwise.dch_loss, gamma=gamma, lam=lam)(h, s),
                             _offdiag_mean(pair, 6) + lam * quant, rtol=1e-4)


def test_idhn_matches_reference():
  _, h = _codes()
  s = np.asarray(pairs.soft_similarity(MULTI_LABELS, MULTI, "shared"))
  alpha, gamma, lam, k = 10.0, 0.7, 0.2, 8

  def pair(i, j):
    ip = h[i] @ h[j]
    if s[i, j] <= 0.01 or s[i, j] >= 0.99:
      return _np_softplus(alpha / k * ip) - s[i, j] * alpha / k * ip
    return gamma * (ip / k - (2 * s[i, j] - 1)) ** 2

  want = _offdiag_mean(pair, 6) + lam * np.mean(np.abs(np.abs(h) - 1))
  got = _jit(pairwise.idhn_loss, alpha=alpha, gamma=gamma, lam=lam)(h, s)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_csq_matches_reference():
  z, _ = _codes(spread=1.0)
  h = np.tanh(z)
  centers = _np_sign(np.random.default_rng(3).normal(size=(6, 8)))
  t = (centers + 1) / 2
  p = (h + 1) / 2
  bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  want = bce.mean() + 0.01 * np.mean((np.abs(h) - 1) ** 2)
  np.testing.assert_allclose(_jit(pointwise.csq_loss, lam=0.01)(z, centers), want, rtol=1e-5)


def test_csq_single_label_centres_follow_class_ids():
  t = pairs.class_targets(SINGLE_LABELS, SINGLE, "all")
  centers = np.asarray(pointwise.class_centers(t, 8, multilabel=False))
  table = pointwise.hash_centers(6, 8)
  np.testing.assert_array_equal(centers, table[[0, 0, 2, 5, 1, 2]])


def test_greedyhash_matches_reference():
  _, h = _codes()
  logits = np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32)
  y = np.array([0, 3, 1, 4, 4, 2])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean(logp[np.arange(6), y]) + 0.1 * np.mean(np.abs(np.abs(h) - 1) ** 3)
  got = _jit(pointwise.greedyhash_loss, alpha=0.1)(h, logits, np.eye(5)[y])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Multi-label: mean per-class sigmoid BCE.
  yy = np.random.default_rng(5).integers(0, 2, size=(6, 5)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits))
  bce = -(yy * np.log(p) + (1 - yy) * np.log(1 - p)).mean()
  got = _jit(pointwise.greedyhash_loss, multilabel=True, alpha=0.0)(h, logits, yy)
  np.testing.assert_allclose(got, bce, rtol=1e-5)


def test_orthohash_matches_reference():
  _, h = _codes()
  book = pointwise.hash_centers(5, 8)
  y = np.array([0, 3, 1, 4, 4, 2])
  scale, margin = 8.0, 0.2
  total = 0.0
  for i in range(6):
    cos = np.array([h[i] @ c / (np.linalg.norm(h[i]) * np.linalg.norm(c)) for c in book])
    logits = scale * (cos - margin * (np.arange(5) == y[i]))
    total += -(logits[y[i]] - np.log(np.exp(logits).sum()))
  got = _jit(pointwise.orthohash_loss, scale=scale, margin=margin)(h, book, np.eye(5)[y])
  np.testing.assert_allclose(got, total / 6, rtol=1e-5)


# ----------------------------------------------------------------------------------------
# The uniform wrapper.

def _loss_cfg(name, similarity="all", **weights):
  cfg = config_lib.base_config().loss
  cfg.name = name
  cfg.similarity = similarity
  cfg.weights = ml_collections.ConfigDict(weights)
  return cfg


def _outputs(schema, classes, bits=8, seed=0):
  z, h = _codes(bits=bits, seed=seed)
  rng = np.random.default_rng(seed + 10)
  return {"codes": jnp.asarray(h), "code_preactivations": jnp.asarray(z),
          "code_logits": jnp.asarray(rng.normal(size=(6, classes)), jnp.float32),
          "logits": {c.name: jnp.asarray(rng.normal(size=(6, c.size)), jnp.float32)
                     for c in schema.characteristics},
          "features": jnp.ones((6, 4))}


def test_dsh_linear_reads_the_preactivations():
  outputs = _outputs(SINGLE, 6)
  cfg = _loss_cfg("dsh", linear=1.0)
  loss, _ = registry.get_loss(cfg, SINGLE)(outputs, SINGLE_LABELS, cfg=cfg, schema=SINGLE,
                                           step=0, key=jax.random.key(0))
  want = pairwise.dsh_loss(outputs["code_preactivations"], _s_all(), margin=16.0)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


BASELINES = ("dpsh", "dsh", "hashnet", "dch", "csq", "greedyhash", "orthohash", "idhn")
CASES = [(name, SINGLE, SINGLE_LABELS, "all") for name in BASELINES if name != "idhn"]
CASES += [(name, MULTI, MULTI_LABELS, "shared")
          for name in ("idhn", "csq", "greedyhash", "orthohash")]


@pytest.mark.parametrize("name,schema,labels,rule", CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_every_baseline_jits_with_finite_value_and_gradients(name, schema, labels, rule):
  cfg = _loss_cfg(name, rule)
  cfg.classification = 0.5
  cfg.quantization = 0.1
  loss_fn = registry.get_loss(cfg, schema)
  outputs = _outputs(schema, pairs.num_classes(schema, rule))

  @jax.jit
  def run(out, step):
    return jax.value_and_grad(lambda o: loss_fn(o, labels, cfg=cfg, schema=schema, step=step,
                                                key=jax.random.key(0)), has_aux=True)(out)

  (loss, metrics), grads = run(outputs, jnp.int32(300))
  assert np.isfinite(float(loss))
  assert float(metrics["loss"]) == pytest.approx(float(loss))
  assert f"loss/{name}" in metrics and "loss/classification" in metrics
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["codes"]).sum() + jnp.abs(grads["code_preactivations"]).sum()
               + jnp.abs(grads["code_logits"]).sum()) > 0
  # Identical saturated codes for dissimilar pairs: the worst case of DCH (d = 0) and CSQ.
  z = jnp.full_like(outputs["code_preactivations"], 30.0)
  saturated = {**outputs, "codes": jnp.tanh(z), "code_preactivations": z}
  (loss, _), grads = run(saturated, jnp.int32(0))
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(grads))


def test_wrapper_adds_classification_and_quantization():
  cfg = _loss_cfg("dpsh", eta=0.0)
  outputs = _outputs(SINGLE, 6)

  def total(cfg):
    fn = registry.get_loss(cfg)
    return jax.jit(lambda o: fn(o, SINGLE_LABELS, cfg=cfg, schema=SINGLE, step=jnp.int32(0),
                                key=jax.random.key(0)))(outputs)

  base, _ = total(cfg)
  # loss.weights overrides the default (eta=0: the bare pair likelihood).
  np.testing.assert_allclose(base, _jit(pairwise.dpsh_loss, eta=0.0)(outputs["codes"], _s_all()),
                             rtol=1e-6)
  cfg.classification, cfg.quantization = 2.0, 3.0
  value, metrics = total(cfg)
  ce = metrics["classification/modality"] + metrics["classification/organ"]
  want = base + 2.0 * ce + 3.0 * _jit(common.quantization_penalty)(outputs["codes"])
  np.testing.assert_allclose(value, want, rtol=1e-6)
  # The classifier cross-entropy by hand for one characteristic.
  lg = np.asarray(outputs["logits"]["organ"])
  logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
  np.testing.assert_allclose(metrics["classification/organ"],
                             -np.mean(logp[np.arange(6), SINGLE_LABELS["organ"]]), rtol=1e-5)


def test_get_loss_errors_name_the_field_and_choices():
  with pytest.raises(ValueError, match=r"loss.name='dpshh'.*\['csq', 'dch', 'dpsh'"):
    registry.get_loss(_loss_cfg("dpshh"))
  with pytest.raises(ValueError,
                     match=r"unknown keys \['etaa'\].*valid keys: \['balance', 'cosine', 'eta'\]"):
    registry.get_loss(_loss_cfg("dpsh", etaa=1.0))
  with pytest.raises(ValueError, match="loss.similarity"):
    registry.get_loss(_loss_cfg("dpsh", "disease"), SINGLE)


def test_greedyhash_without_code_classifier_says_what_to_set():
  cfg = _loss_cfg("greedyhash")
  loss_fn = registry.get_loss(cfg)
  outputs = _outputs(SINGLE, 6)
  del outputs["code_logits"]
  # Raised while tracing, before anything is compiled.
  run = jax.jit(lambda o: loss_fn(o, SINGLE_LABELS, cfg=cfg, schema=SINGLE, step=0,
                                  key=jax.random.key(0)))
  with pytest.raises(ValueError, match="model.code_classifier='all'"):
    run(outputs)
  with pytest.raises(ValueError, match="has 3 classes"):
    run(_outputs(SINGLE, 3))  # Classes of "modality", not of "all".


def test_classification_without_logits_says_what_to_set():
  cfg = _loss_cfg("dpsh")
  cfg.classification = 1.0
  outputs = _outputs(SINGLE, 6)
  del outputs["logits"]
  loss_fn = registry.get_loss(cfg)
  with pytest.raises(ValueError, match="model.classifier=True"):
    jax.jit(lambda o: loss_fn(o, SINGLE_LABELS, cfg=cfg, schema=SINGLE, step=0,
                              key=jax.random.key(0)))(outputs)


def test_every_baseline_is_registered_with_default_weights():
  assert set(BASELINES) <= set(registry.LOSSES)
  assert set(BASELINES) <= set(registry.DEFAULT_WEIGHTS)
