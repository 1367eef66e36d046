"""fast_layers: Conv and max_pool equal flax's nn.Conv / nn.max_pool (parameters, outputs,
gradients), and the backbones built from them keep their parameter trees."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax.models import backbones
from dnh_jax.models import fast_layers

KEY = jax.random.key(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def _reference_conv(features, kernel, stride, pad, use_bias, dtype=None):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype)


def _assert_trees_close(a, b, **tol):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.mark.parametrize("lowering", ["patches", "xla"])
@pytest.mark.parametrize("kernel,stride,pad,size,use_bias", [
    (3, 1, 1, 4, False),   # 4x4 out: the ResNet stage at 64 px
    (3, 2, 1, 7, True),    # odd input, strided
    (3, 1, 1, 2, False),   # 2x2 map: the slowest case for Eigen
    (1, 2, 0, 6, False),   # ResNet projection
    (5, 2, 2, 9, True),    # AlexNet 64 px stem
    (3, 1, 0, 5, True),    # no padding
])
def test_conv_matches_flax(lowering, kernel, stride, pad, size, use_bias):
  x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 3))
  ours = fast_layers.Conv(5, kernel, strides=stride, padding=pad, use_bias=use_bias,
                          lowering=lowering)
  ref = _reference_conv(5, kernel, stride, pad, use_bias)
  variables = ref.init(KEY, x)
  _assert_trees_close(ours.init(KEY, x), variables, rtol=0, atol=0)  # same init values
  if use_bias:  # a non-zero bias, so that its addition is checked too
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)

  def loss(module, variables, x):
    y = module.apply(variables, x)
    return jnp.sum(jnp.sin(y)), y

  grad = lambda module: jax.jit(jax.value_and_grad(lambda v, x: loss(module, v, x), (0, 1),
                                                    has_aux=True))
  (l_ref, y_ref), g_ref = grad(ref)(variables, x)
  (l_ours, y_ours), g_ours = grad(ours)(variables, x)
  assert y_ours.shape == y_ref.shape
  np.testing.assert_allclose(y_ours, y_ref, **TOL)
  np.testing.assert_allclose(l_ours, l_ref, **TOL)
  _assert_trees_close(g_ours, g_ref, **TOL)


def test_conv_bfloat16_compute_keeps_float32_params():
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  ours = fast_layers.Conv(4, 3, padding=1, dtype=jnp.bfloat16)
  ref = _reference_conv(4, 3, 1, 1, True, dtype=jnp.bfloat16)
  variables = ref.init(KEY, x)
  assert variables["params"]["kernel"].dtype == jnp.float32
  y_ours, y_ref = ours.apply(variables, x), ref.apply(variables, x)
  assert y_ours.dtype == y_ref.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(y_ours), np.float32(y_ref), rtol=2e-2, atol=2e-2)


def test_conv_auto_names_like_nn_conv():
  class Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = fast_layers.Conv(4, 3, padding=1)(x)
      x = nn.Conv(4, (1, 1))(x)
      return fast_layers.Conv(4, 1)(x)

  params = jax.eval_shape(Mixed().init, KEY, jnp.zeros((1, 4, 4, 2)))["params"]
  assert sorted(params) == ["Conv_0", "Conv_1", "Conv_2"]


def test_use_patches_only_for_small_maps_and_1x1():
  assert fast_layers.use_patches(2, 2, 3) and fast_layers.use_patches(4, 4, 3)
  assert not fast_layers.use_patches(8, 8, 3) and not fast_layers.use_patches(32, 32, 3)
  assert fast_layers.use_patches(16, 16, 1)


def test_conv_errors():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="lowering='im2col'.*auto"):
    fast_layers.Conv(3, 3, lowering="im2col").init(KEY, x)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    fast_layers.Conv(3, 3).init(KEY, jnp.zeros((4, 4, 2)))
  with pytest.raises(ValueError, match="too small"):
    fast_layers.Conv(3, 5).init(KEY, jnp.zeros((1, 3, 3, 2)))


@pytest.mark.parametrize("window,stride,pad,size", [
    (3, 2, 1, 9), (3, 2, 0, 8), (2, 2, 0, 6), (3, 1, 1, 5)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_matches_flax(window, stride, pad, size, ties):
  x = jax.random.normal(jax.random.key(2), (2, size, size + 2, 3))
  if ties:  # ReLU zeros and repeated integers: the gradient must pick the same element
    x = jnp.round(jax.nn.relu(x) * 2)
  ref = lambda x: nn.max_pool(x, (window, window), strides=(stride, stride),
                              padding=((pad, pad), (pad, pad)))
  ours = lambda x: fast_layers.max_pool(x, window, stride, pad)
  y_ref, vjp_ref = jax.vjp(ref, x)
  y_ours, vjp_ours = jax.vjp(jax.jit(ours), x)
  np.testing.assert_array_equal(y_ours, y_ref)
  g = jax.random.normal(jax.random.key(3), y_ref.shape)
  np.testing.assert_array_equal(vjp_ours(g)[0], vjp_ref(g)[0])


def test_max_pool_errors():
  with pytest.raises(ValueError, match="smaller than the window"):
    fast_layers.max_pool(jnp.zeros((1, 4, 4, 1)), 2, 2, 2)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    fast_layers.max_pool(jnp.zeros((4, 4, 1)), 2, 2)


def _flax_conv(features, kernel, stride, dtype, name=None, use_bias=True, lowering="auto",
               pad=None):
  del lowering  # nn.Conv has one lowering
  pad = kernel // 2 if pad is None else pad
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, name=name)


def _flax_pool(x, window, stride, pad=0):
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("resnet50", 64), ("alexnet", 64),
                                       ("small_cnn", 28)])
def test_backbone_parameter_trees_unchanged(monkeypatch, name, size):
  images = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)
  init = lambda m: jax.eval_shape(lambda x: m.init({"params": KEY, "dropout": KEY}, x), images)
  ours = init(backbones.get_backbone(name))
  monkeypatch.setattr(backbones, "_conv", _flax_conv)
  monkeypatch.setattr(backbones, "_max_pool", _flax_pool)
  ref = init(backbones.get_backbone(name))
  assert jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), ours) == (
      jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), ref))


def test_small_resnet_train_step_matches_flax_layers(monkeypatch):
  # Stages at 16, 8, 4 px: both lowerings, projections, batch statistics, the stem pool.
  model = backbones.ResNet((1, 1, 1), backbones.BasicBlock, width=4)
  x = np.random.default_rng(4).uniform(size=(2, 64, 64, 1)).astype(np.float32)
  # Random values in init's structure (jitting init compiles one RNG program per parameter:
  # ~10 s): He-scaled kernels and non-zero scales, so that every convolution gets a gradient.
  shapes = jax.eval_shape(model.init, KEY, x)
  rng = np.random.default_rng(5)

  def fill(path, s):
    if path[-1].key == "kernel":
      return np.float32(rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1])))
    offset = 0.5 if path[-1].key in ("scale", "var") else 0.0
    return np.float32(offset + rng.uniform(size=s.shape))

  variables = jax.tree_util.tree_map_with_path(fill, shapes)

  def loss(params):
    y, state = model.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats"])
    return jnp.sum(jnp.tanh(y)), state

  ours = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  monkeypatch.setattr(backbones, "_conv", _flax_conv)
  monkeypatch.setattr(backbones, "_max_pool", _flax_pool)
  ref = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  grads = jax.tree_util.tree_leaves(ours[1])
  assert min(float(jnp.max(jnp.abs(g))) for g in grads) > 1e-3  # no vacuous comparison
  _assert_trees_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_small_cnn_keeps_xla_convolutions_bit_for_bit():
  """The small CNN (every recorded objective run) computes exactly what it computed with
  nn.Conv, also at 32 px where its last map is 4x4 (the patch lowering's range)."""
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 1))
  model = backbones.SmallCNN()
  params = model.init(KEY, x)
  out = model.apply(params, x)
  p = params["params"]
  y = x
  for i in range(3):
    conv = _reference_conv(model.widths[i], 3, 2, 1, True)
    y = nn.relu(conv.apply({"params": p[f"conv{i}"]}, y))
  assert y.shape[1:3] == (4, 4)
  y = y.reshape(y.shape[0], -1)
  ref = nn.relu(nn.Dense(model.features).apply({"params": p["fc"]}, y))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
