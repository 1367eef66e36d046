"""Invariance terms of objective 4: gradient reversal, conditional adversaries, MixStyle."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import losses as losses_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.losses import common
from dnh_jax.losses import invariance
from dnh_jax.models import backbones

SCHEMA = schema_lib.multi_characteristic_schema()


def test_gradient_reversal_sign_and_scale():
  x = jnp.array([0.5, -1.0, 2.0])
  w = jnp.array([1.0, 2.0, -3.0])
  for scale in (0.0, 1.0, 2.5):
    value = common.gradient_reversal(x, jnp.float32(scale))
    np.testing.assert_array_equal(np.asarray(value), np.asarray(x))   # identity forward
    grad = jax.grad(lambda v: jnp.sum(common.gradient_reversal(v, jnp.float32(scale)) * w))(x)
    np.testing.assert_allclose(np.asarray(grad), -scale * np.asarray(w))


def _batch(b=12, seed=0):
  rng = np.random.default_rng(seed)
  labels = {"modality": rng.integers(0, 5, b), "organ": rng.integers(0, 5, b),
            "disease": rng.integers(0, SCHEMA["disease"].size, b)}
  labels = {k: jnp.asarray(v, jnp.int32) for k, v in labels.items()}
  subcodes = {n: jnp.asarray(np.tanh(rng.normal(size=(b, 4))), jnp.float32)
              for n in SCHEMA.names}
  return subcodes, labels


def test_conditional_adversary_gradients():
  """The adversaries descend their cross-entropy; the sub-codes get the reversed gradient
  (exactly -lambda times the gradient of the same cross-entropy)."""
  subcodes, labels = _batch()
  params = invariance.init_adversaries(jax.random.key(0), subcodes, SCHEMA, width=8)
  assert set(params) == {f"{c}->{o}" for c in SCHEMA.names for o in SCHEMA.names if c != o}

  def loss(p, h, scale):
    return invariance.conditional_adversary_loss(p, h, labels, SCHEMA, scale)[0]

  g_h1 = jax.grad(loss, argnums=1)(params, subcodes, 1.0)
  g_h2 = jax.grad(loss, argnums=1)(params, subcodes, 2.0)
  g_h0 = jax.grad(loss, argnums=1)(params, subcodes, 0.0)
  # A second reversal in front undoes the first: that is the plain gradient of the
  # cross-entropy, which the reversal negates and scales by lambda.
  plain = jax.grad(lambda h: loss(params, {n: common.gradient_reversal(v, 1.0)
                                           for n, v in h.items()}, 1.0))(subcodes)
  for n in SCHEMA.names:
    np.testing.assert_allclose(np.asarray(g_h1[n]), -np.asarray(plain[n]), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_h2[n]), 2 * np.asarray(g_h1[n]), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(np.asarray(g_h0[n]), 0.0)
    assert np.abs(np.asarray(g_h1[n])).max() > 0
  # A few plain gradient steps on the adversaries lower their loss.
  before = float(loss(params, subcodes, 1.0))
  p = params
  for _ in range(20):
    g = jax.grad(loss)(p, subcodes, 1.0)
    p = jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
  assert float(loss(p, subcodes, 1.0)) < before


def test_adversary_is_wired_through_get_loss():
  c = config_lib.base_config().loss
  c.name, c.classification, c.adversary = "structured_dch", 0.0, 1.0
  c.weights = ml_collections.ConfigDict({"subcode": 1.0, "whole": 0.0})
  fn = losses_lib.get_loss(c, SCHEMA)
  subcodes, labels = _batch()
  codes = jnp.concatenate([subcodes[n] for n in SCHEMA.names], -1)
  outputs = {"codes": codes, "code_preactivations": codes, "subcodes": subcodes}
  params = fn.init_params(jax.random.key(0), outputs)
  assert set(params) == {"adversaries"}
  total, metrics = fn(outputs, labels, cfg=c, schema=SCHEMA, step=jnp.int32(1000),
                      key=jax.random.key(1), params=params)
  assert "loss/adversary" in metrics and "adversary/organ->modality_accuracy" in metrics
  c_off = config_lib.base_config().loss
  c_off.name, c_off.classification = "structured_dch", 0.0
  c_off.weights = ml_collections.ConfigDict({"subcode": 1.0, "whole": 0.0})
  off, _ = losses_lib.get_loss(c_off, SCHEMA)(outputs, labels, cfg=c_off, schema=SCHEMA,
                                               step=jnp.int32(1000), key=jax.random.key(1))
  np.testing.assert_allclose(float(total), float(off) + float(metrics["loss/adversary"]),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="loss.adversary"):
    c_bad = config_lib.base_config().loss
    c_bad.name, c_bad.adversary = "ophash", 1.0
    losses_lib.get_loss(c_bad, SCHEMA)


def test_mixstyle_mixes_statistics():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 5, 5, 3)) * rng.uniform(0.5, 3, (6, 1, 1, 3))
                  + rng.normal(size=(6, 1, 1, 3)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(backbones.mixstyle(jax.random.key(0), x, 0.0)),
                                np.asarray(x))
  y = np.asarray(backbones.mixstyle(jax.random.key(0), x, 1.0))
  np.testing.assert_array_equal(y, np.asarray(backbones.mixstyle(jax.random.key(0), x, 1.0)))
  assert not np.allclose(y, np.asarray(x))
  # Content is kept: each channel of each example is an affine map of its input.
  xs, ys = np.asarray(x).reshape(6, 25, 3), y.reshape(6, 25, 3)
  for b in range(6):
    for ch in range(3):
      assert abs(np.corrcoef(xs[b, :, ch], ys[b, :, ch])[0, 1]) > 0.999
  # The mixed means lie between the batch's extremes (convex combinations).
  mu_x, mu_y = xs.mean(1), ys.mean(1)
  assert np.all(mu_y >= mu_x.min(0) - 1e-5) and np.all(mu_y <= mu_x.max(0) + 1e-5)
  with pytest.raises(ValueError, match="model.mixstyle"):
    backbones.get_backbone("resnet18", mixstyle_p=0.5)
