"""Models: output shapes of every backbone x head (shape-only tracing, no compile), a few
real forward passes at small sizes, structured sub-codes, bf16, and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import models
from dnh_jax.data import schema as schema_lib
from dnh_jax.models import build

SCHEMA = schema_lib.multi_characteristic_schema()  # modality 5, organ 5, disease 15
MULTI = schema_lib.chest_multilabel_schema()  # findings: 13 labels
FEATURES = {"small_cnn": 256, "alexnet": 4096, "resnet18": 512, "resnet50": 2048}
KEY = jax.random.key(0)


def _cfg(backbone="small_cnn", head="flat", bits=48, **kw):
  cfg = config_lib.base_config().model
  cfg.backbone, cfg.head, cfg.bits = backbone, head, bits
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def _shapes(model, batch, size):
  """(variable shapes, train-mode output shapes, new-state shapes) without compiling."""
  images = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({"params": KEY, "dropout": KEY}, x, train=False), images)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, rngs={"dropout": KEY},
                               mutable=["batch_stats"]), variables, images)
  return variables, out, state


def _variables(model, images, seed=0):
  """Variables with the shapes model.init gives, filled from a seeded NumPy generator.

  Jitting model.init costs ~10 s of compile on two cores (one RNG program per parameter);
  the structure comes from tracing it (`jax.eval_shape`) and the values need only be sane:
  He-scaled kernels, unit scales and variances, zero biases and means.
  """
  shapes = jax.eval_shape(
      lambda x: model.init({"params": KEY, "dropout": KEY}, x, train=False), images)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _shape_tree(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


SHAPE_CASES = [(b, h, s) for b in ("small_cnn", "alexnet", "resnet18")
               for h in ("flat", "structured") for s in (28, 64)]
# ResNet-50 is checked by its one real forward below (tracing it alone costs seconds).
SHAPE_CASES += [("alexnet", "flat", 224), ("resnet18", "flat", 224)]


@pytest.mark.parametrize("backbone,head,size", SHAPE_CASES)
def test_output_shapes(backbone, head, size):
  model = models.build_model(_cfg(backbone, head, code_classifier="all"), SCHEMA)
  variables, out, state = _shapes(model, 3, size)
  want = {"codes": (3, 48), "code_preactivations": (3, 48), "features": (3, FEATURES[backbone]),
          "logits": {"modality": (3, 5), "organ": (3, 5), "disease": (3, 15)},
          "code_logits": (3, 5 * 5 * 15)}
  if head == "structured":
    want["subcodes"] = {"modality": (3, 16), "organ": (3, 16), "disease": (3, 16)}
  assert _shape_tree(out) == want
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(out))
  has_bn = backbone.startswith("resnet")
  assert ("batch_stats" in variables) == has_bn
  assert ("batch_stats" in state) == has_bn


def test_alexnet_stem_follows_input_size():
  # The last map before fc6: 6x6 at 224 px, 3x3 at 64 px, 2x2 at 28 px (x 256 channels).
  for size, cells in ((224, 36), (64, 9), (28, 4)):
    variables, _, _ = _shapes(models.build_model(_cfg("alexnet"), SCHEMA), 1, size)
    assert variables["params"]["backbone"]["fc6"]["kernel"].shape == (cells * 256, 4096)


def test_small_cnn_train_and_eval_forward():
  model = models.build_model(_cfg("small_cnn", "structured", bits=16, classifier=False),
                             SCHEMA)
  images = jax.random.normal(KEY, (4, 28, 28, 1))
  variables = _variables(model, images)
  out_eval, (out_train, state) = jax.jit(lambda v, x: (
      model.apply(v, x, train=False),
      model.apply(v, x, train=True, rngs={"dropout": KEY}, mutable=["batch_stats"])))(
          variables, images)
  assert not state  # No BatchNorm: nothing to update.
  assert "logits" not in out_eval  # model.classifier=False
  np.testing.assert_allclose(out_eval["codes"], out_train["codes"], rtol=1e-6)
  codes = np.asarray(out_eval["codes"])
  assert np.all(np.abs(codes) < 1) and np.isfinite(codes).all()
  # Structured: 16 bits split 6 + 5 + 5, concatenated in schema order.
  sub = out_eval["subcodes"]
  assert [sub[n].shape[1] for n in SCHEMA.names] == [6, 5, 5]
  np.testing.assert_allclose(np.concatenate([sub[n] for n in SCHEMA.names], -1), codes,
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.tanh(out_eval["code_preactivations"]), codes, rtol=1e-5,
                             atol=1e-6)


def test_resnet18_batch_stats_update_in_train_mode_only():
  model = models.build_model(_cfg("resnet18"), SCHEMA)
  images = jax.random.normal(KEY, (2, 28, 28, 1)) * 3 + 1
  variables = _variables(model, images)
  out, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, images)
  before = variables["batch_stats"]["backbone"]["stem_norm"]["mean"]
  after = state["batch_stats"]["backbone"]["stem_norm"]["mean"]
  assert not np.allclose(before, after)  # Running averages moved towards the batch.
  assert np.isfinite(np.asarray(out["codes"])).all()


def test_resnet50_small_forward():
  model = models.build_model(_cfg("resnet50", "structured", bits=15), SCHEMA)
  images = jax.random.normal(KEY, (2, 28, 28, 1))
  variables = _variables(model, images)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert _shape_tree(out) == {
      "codes": (2, 15), "code_preactivations": (2, 15), "features": (2, 2048),
      "subcodes": {"modality": (2, 5), "organ": (2, 5), "disease": (2, 5)},
      "logits": {"modality": (2, 5), "organ": (2, 5), "disease": (2, 15)}}
  assert np.isfinite(np.asarray(out["codes"])).all()
  assert "batch_stats" in variables


def test_alexnet_dropout_only_when_training():
  model = models.build_model(_cfg("alexnet", bits=8), SCHEMA)
  images = jax.random.normal(KEY, (2, 28, 28, 1))
  variables = _variables(model, images)

  def features(v, x, key):
    train = model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    return train[0]["features"], model.apply(v, x, train=False)["features"]

  run = jax.jit(jax.vmap(features, in_axes=(None, None, 0)))  # Two keys, one compile.
  train, evaluate = run(variables, images, jax.random.split(jax.random.key(1)))
  assert not np.allclose(train[0], train[1])
  np.testing.assert_array_equal(evaluate[0], evaluate[1])


def test_bfloat16_compute_runs_and_stays_close():
  images = jax.random.normal(KEY, (4, 32, 32, 1))
  f32, bf16 = (models.build_model(_cfg("small_cnn", "structured", bits=12, dtype=d), SCHEMA)
               for d in ("float32", "bfloat16"))
  variables = _variables(bf16, images)
  # Parameters stay float32 (same tree as the float32 model); only the compute is bf16.
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert _shape_tree(variables) == _shape_tree(_variables(f32, images))
  out32, out16 = jax.jit(lambda v, x: (f32.apply(v, x, train=False),
                                       bf16.apply(v, x, train=False)))(variables, images)
  assert out16["codes"].dtype == jnp.float32
  np.testing.assert_allclose(out16["codes"], out32["codes"], atol=0.05)
  assert not np.array_equal(out16["codes"], out32["codes"])  # bf16 really was used.


def test_resnet_bfloat16_shapes():
  _, out, state = _shapes(models.build_model(_cfg("resnet18", dtype="bfloat16"), SCHEMA), 2, 28)
  assert out["codes"].dtype == jnp.float32 and out["features"].dtype == jnp.float32
  assert jax.tree.leaves(state["batch_stats"])[0].dtype == jnp.float32


def test_multilabel_logits_and_code_classifier():
  model = models.build_model(_cfg("small_cnn", code_classifier="shared"), MULTI)
  _, out, _ = _shapes(model, 2, 28)
  assert out["logits"]["findings"].shape == (2, 13)
  assert out["code_logits"].shape == (2, 13)


def test_code_classifier_trains_the_hash_layer_through_the_sign():
  model = models.build_model(_cfg("small_cnn", bits=8, code_classifier="organ"), SCHEMA)
  images = jax.random.normal(KEY, (2, 28, 28, 1))
  variables = _variables(model, images)

  def objective(params):
    return jnp.sum(model.apply({"params": params}, images, train=False)["code_logits"][:, 0])

  grads = jax.jit(jax.grad(objective))(variables["params"])
  assert float(jnp.abs(grads["head"]["hash"]["dense"]["kernel"]).sum()) > 0


def test_sign_straight_through():
  x = jnp.array([-0.3, 0.0, 0.7])
  np.testing.assert_array_equal(models.sign_straight_through(x), [-1.0, 1.0, 1.0])
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(models.sign_straight_through(v)))(x),
                                [1.0, 1.0, 1.0])


def test_segments_default_and_explicit():
  assert build.segments(_cfg(bits=48), SCHEMA) == (16, 16, 16)
  assert build.segments(_cfg(bits=16), SCHEMA) == (6, 5, 5)
  assert build.segments(_cfg(bits=16, segments=(4, 4, 8)), SCHEMA) == (4, 4, 8)
  _, out, _ = _shapes(models.build_model(_cfg(head="structured", bits=16, segments=(4, 4, 8)),
                                         SCHEMA), 2, 28)
  assert [out["subcodes"][n].shape[1] for n in SCHEMA.names] == [4, 4, 8]
  with pytest.raises(ValueError, match=r"model.segments=\(4, 4\).*summing to model.bits=16"):
    build.segments(_cfg(bits=16, segments=(4, 4)), SCHEMA)
  with pytest.raises(ValueError, match=r"model.segments=\(4, 4, 4\)"):
    build.segments(_cfg(bits=16, segments=(4, 4, 4)), SCHEMA)
  with pytest.raises(ValueError, match="model.bits=2 is fewer than one bit"):
    build.segments(_cfg(bits=2), SCHEMA)


def test_config_typos_raise_listing_valid_names():
  with pytest.raises(ValueError, match=r"model.backbone='resnet19'.*\['alexnet', 'resnet18', "
                                       r"'resnet50', 'small_cnn'"):
    models.build_model(_cfg("resnet19"), SCHEMA)
  with pytest.raises(ValueError, match=r"model.head='flatt'.*'flat'.*'structured'"):
    models.build_model(_cfg(head="flatt"), SCHEMA)
  with pytest.raises(ValueError, match=r"model.dtype='fp16'.*\['bfloat16', 'float32'\]"):
    models.build_model(_cfg(dtype="fp16"), SCHEMA)
  with pytest.raises(ValueError, match=r"model.code_classifier='anatomy'.*valid rules"):
    models.build_model(_cfg(code_classifier="anatomy"), SCHEMA)
  with pytest.raises(ValueError, match=r"model.backbone='vgg'.*'small_cnn'"):
    models.get_backbone("vgg")


def test_too_small_images_are_rejected():
  model = models.build_model(_cfg(), SCHEMA)
  with pytest.raises(ValueError, match="8x8 px are too small"):
    _shapes(model, 1, 8)
