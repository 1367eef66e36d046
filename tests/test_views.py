"""Per-sub-network training views (dnh_jax/models/views.py): determinism and statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import models as models_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.models import views

SCHEMA = schema_lib.multi_characteristic_schema()


def _images(b=8, size=32, seed=0):
  """A batch of structured images: a bright disc at a random place on a ramp, in [0, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / (size - 1.0)
  out = []
  for _ in range(b):
    cy, cx = rng.uniform(0.3, 0.7, 2)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 0.04).astype(float)
    out.append(np.clip(0.3 * xx + 0.6 * disc + 0.05 * rng.normal(size=xx.shape), 0, 1))
  return jnp.asarray(np.stack(out)[..., None], jnp.float32)


def test_views_are_deterministic_per_key():
  x = _images()
  for name, (train_view, test_view) in views.VIEWS.items():
    train_view = jax.jit(train_view, static_argnums=2)
    test_view = jax.jit(test_view, static_argnums=1)
    a = train_view(jax.random.key(3), x, 8)
    b = train_view(jax.random.key(3), x, 8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    np.testing.assert_array_equal(np.asarray(test_view(x, 8)), np.asarray(test_view(x, 8)))
    if name != "identity":
      c = train_view(jax.random.key(4), x, 8)
      assert not np.allclose(np.asarray(a), np.asarray(c)), name
  # The step keys the trainer uses: fold_in(key, step) gives a new view every step.
  k, contrast = jax.random.key(0), jax.jit(views.contrast_randomize)
  s0 = contrast(jax.random.fold_in(k, 0), x)
  s1 = contrast(jax.random.fold_in(k, 1), x)
  assert not np.allclose(np.asarray(s0), np.asarray(s1))


def test_contrast_view_statistics():
  """Range [0, 1] per image; the random LUT removes the grey-level ordering: over many
  draws the correlation of output with input intensity averages to about 0, while draws
  are often strongly (anti-)correlated with it (a remapping, not noise; a non-monotonic
  table folds the grey scale, which lowers the linear correlation of some draws)."""
  x = _images(b=1)
  flat_x = np.asarray(x).reshape(-1)
  draws = jax.jit(jax.vmap(lambda k: views.contrast_randomize(k, x)))(
      jax.random.split(jax.random.key(0), 64))
  draws = np.asarray(draws).reshape(64, -1)
  np.testing.assert_allclose(draws.min(axis=1), 0.0, atol=1e-6)
  np.testing.assert_allclose(draws.max(axis=1), 1.0, atol=1e-6)
  corrs = np.asarray([np.corrcoef(flat_x, y)[0, 1] for y in draws])
  assert abs(corrs.mean()) < 0.25, corrs.mean()
  assert np.mean(np.abs(corrs)) > 0.25, np.mean(np.abs(corrs))
  assert (corrs < -0.3).any() and (corrs > 0.3).any()   # inverted as well as kept


def test_lut_gamma_bias_blur_statistics():
  x = _images(b=4)
  # LUT: outputs lie in the convex hull of the knot values (in [0, 1]).
  y = np.asarray(views.random_lut(jax.random.key(0), x, knots=6))
  assert 0.0 <= y.min() and y.max() <= 1.0
  # Gamma keeps 0 and 1 and the order of intensities within an image.
  g = np.asarray(views.random_gamma(jax.random.key(1), x))
  for i in range(4):
    order = np.argsort(np.asarray(x[i]).reshape(-1), kind="stable")
    assert np.all(np.diff(g[i].reshape(-1)[order]) >= -1e-6)
  # Bias field: a smooth positive factor (neighbouring pixels differ little).
  ones = jnp.ones((4, 32, 32, 1))
  field = np.asarray(views.bias_field(jax.random.key(2), ones, strength=0.3))
  assert field.min() > 0 and field.std() > 0.05
  for axis in (1, 2):   # a step between neighbours is a small part of the field's range
    steps = np.abs(np.diff(field, axis=axis)).max(axis=(1, 2, 3))
    assert np.all(steps < 0.3 * (field.max(axis=(1, 2, 3)) - field.min(axis=(1, 2, 3))))
  # Blur: a constant image stays constant, sharp edges get softer, mean is kept.
  const = np.asarray(views.gaussian_blur(jax.random.key(3), 0.5 * ones))
  np.testing.assert_allclose(const, 0.5, atol=1e-6)
  step_img = jnp.asarray(np.tile((np.arange(32) >= 16).astype(np.float32), (4, 32, 1))[..., None])
  blurred = np.asarray(views.gaussian_blur(jax.random.key(4), step_img, max_sigma=1.0))
  assert np.abs(np.diff(blurred, axis=2)).max() <= 1.0
  np.testing.assert_allclose(blurred.mean(), np.asarray(step_img).mean(), atol=0.02)


def test_patch_shuffle_keeps_tiles_and_removes_layout():
  x = _images(b=4)
  y = np.asarray(views.patch_shuffle(jax.random.key(0), x, 8))
  # The same tiles, each intact, in another order.
  xt = np.asarray(views._tiles(x, 8)).reshape(4, 16, -1)
  yt = np.asarray(views._tiles(jnp.asarray(y), 8)).reshape(4, 16, -1)
  for i in range(4):
    assert sorted(map(bytes, xt[i])) == sorted(map(bytes, yt[i]))
  assert not np.allclose(y, np.asarray(x))
  # Layout is gone: averaged over draws, every position holds the image's mean tile.
  one = x[:1]
  mean = np.asarray(jax.jit(jax.vmap(lambda k: views.patch_shuffle(k, one, 8)))(
      jax.random.split(jax.random.key(0), 400))).mean(axis=0)
  tile_mean = np.asarray(views._tiles(one, 8)).mean(axis=1)          # [1, 8, 8, 1]
  per_position = np.asarray(views._tiles(jnp.asarray(mean), 8))[0]    # [16, 8, 8, 1]
  assert np.abs(per_position - tile_mean[0]).max() < 0.06
  with pytest.raises(ValueError, match="view_patch"):
    views.patch_shuffle(jax.random.key(0), _images(size=30), 8)


def test_inference_views_are_fixed():
  """At inference `contrast` is the identity and `patches` ONE fixed permutation, the same
  for every image (views.py says why)."""
  x = _images(b=3)
  np.testing.assert_array_equal(np.asarray(views.VIEWS["contrast"][1](x, 8)), np.asarray(x))
  fixed = np.asarray(views.fixed_patch_shuffle(x, 8))
  for i in range(3):   # the same permutation for each image: shuffling image i alone agrees
    np.testing.assert_array_equal(fixed[i:i + 1],
                                  np.asarray(views.fixed_patch_shuffle(x[i:i + 1], 8)))
  assert not np.allclose(fixed, np.asarray(x))
  out = views.apply_views(("patches", "contrast", "identity"), x, key=None, patch=8)
  assert out.shape == (3, *x.shape)
  np.testing.assert_array_equal(np.asarray(out[0]), fixed)
  np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(x))
  with pytest.raises(ValueError, match="model.views"):
    views.check_views(("patches", "contrast"), 3)
  with pytest.raises(ValueError, match="model.views entry"):
    views.check_views(("patches", "contrast", "mixup"), 3)


def test_independent_network_sees_its_own_view():
  """Training mode with a "views" key: network i sees view i (its features differ from
  the inference pass only where the view is random); inference is deterministic and equals
  the networks applied to the inference views."""
  c = config_lib.base_config().model
  c.head, c.bits = "independent", 48
  c.views = ("patches", "contrast", "identity")
  model = models_lib.build_model(c, SCHEMA)
  x = _images(b=4)
  variables = model.init({"params": jax.random.key(0)}, x)
  test_a = model.apply(variables, x)
  test_b = model.apply(variables, x)
  np.testing.assert_array_equal(np.asarray(test_a["codes"]), np.asarray(test_b["codes"]))
  train_out = model.apply(variables, x, train=True, rngs={"views": jax.random.key(5)})
  for name, same in (("modality", False), ("organ", False), ("disease", True)):
    equal = np.allclose(np.asarray(train_out["subcodes"][name]),
                        np.asarray(test_a["subcodes"][name]))
    assert equal == same, name
  # Inference equals a view-free model fed the fixed views network by network.
  c_plain = config_lib.base_config().model
  c_plain.head, c_plain.bits = "independent", 48
  plain = models_lib.build_model(c_plain, SCHEMA)
  fixed = views.fixed_patch_shuffle(x, 8)
  np.testing.assert_allclose(np.asarray(plain.apply(variables, fixed)["subcodes"]["modality"]),
                             np.asarray(test_a["subcodes"]["modality"]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(plain.apply(variables, x)["subcodes"]["organ"]),
                             np.asarray(test_a["subcodes"]["organ"]), atol=1e-6)
