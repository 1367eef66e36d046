"""Fuzzy inference layer: stages on hand-made values, gradients, model hook, inspection."""

import functools
import json
import math
import os

import jax
from jax import flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.models import build_model
from dnh_jax.models import fuzzy
from dnh_jax.report import fuzzy_report


# ----------------------------------------------------------------------------- stages

def test_gaussian_membership_hand_values():
  # One example, inputs z = (0, 1); rule 0 centred (0, 0) width 1, rule 1 centred (1, 0)
  # width 0.5: mu = exp(-(z - c)^2 / 2 s^2).
  z = jnp.array([[0.0, 1.0]])
  centres = jnp.array([[0.0, 1.0], [0.0, 0.0]])   # [M, R]
  widths = jnp.array([[1.0, 0.5], [1.0, 0.5]])
  mu = np.exp(np.asarray(fuzzy.gaussian_log_membership(z, centres, widths)))
  assert mu.shape == (1, 2, 2)
  expected = np.array([[[1.0, math.exp(-2.0)],             # input 0 = 0: d = 0 / 1, 1 / .5
                        [math.exp(-0.5), math.exp(-2.0)]]])  # input 1 = 1: d = 1 / 1, 1 / .5
  np.testing.assert_allclose(mu, expected, rtol=1e-6)


def test_bell_membership_hand_values():
  # 1 / (1 + |(z - c)/a|^(2b)): 1 at the centre, 1/2 at |z - c| = a, 1/(1 + 2^(2b)) at 2a.
  z = jnp.array([[0.0], [0.5], [1.0], [-1.0]])
  centres, widths = jnp.zeros((1, 2)), jnp.full((1, 2), 0.5)
  shapes = jnp.array([[1.0, 2.0]])
  mu = np.exp(np.asarray(fuzzy.bell_log_membership(z, centres, widths, shapes)))[:, 0, :]
  expected = np.array([[1.0, 1.0], [0.5, 0.5], [1 / 5, 1 / 17], [1 / 5, 1 / 17]])
  np.testing.assert_allclose(mu, expected, rtol=1e-5)
  # Far from the centre the log form neither overflows nor returns -inf.
  far = fuzzy.bell_log_membership(jnp.array([[1e6]]), jnp.zeros((1, 1)), jnp.full((1, 1), 1e-3),
                                  jnp.full((1, 1), 5.0))
  assert np.isfinite(np.asarray(far)).all()


def test_product_and_softmin_tnorms():
  # Memberships of two rules over three inputs: rule 0 (0.5, 0.2, 1.0), rule 1 (0.9, 0.9, 0.1).
  mu = np.array([[[0.5, 0.9], [0.2, 0.9], [1.0, 0.1]]])
  log_mu = jnp.log(jnp.asarray(mu))
  np.testing.assert_allclose(np.exp(fuzzy.product_tnorm(log_mu)), [[0.1, 0.081]], rtol=1e-5)
  t = 0.05
  soft = np.asarray(fuzzy.softmin_tnorm(log_mu, t))
  reference = -t * np.log(np.sum(np.exp(-np.log(mu) / t), axis=1))
  np.testing.assert_allclose(soft, reference, rtol=1e-5)
  hard = np.log(mu).min(axis=1)
  assert np.all(soft <= hard + 1e-6) and np.all(soft >= hard - t * math.log(3) - 1e-6)
  # Near the minimum t-norm for a small temperature.
  np.testing.assert_allclose(np.exp(fuzzy.softmin_tnorm(log_mu, 1e-3)), [[0.2, 0.1]],
                             rtol=1e-2)
  with pytest.raises(ValueError, match="temperature"):
    fuzzy.softmin_tnorm(log_mu, 0.0)


def test_normalized_firing_with_rule_weights():
  # Equal strengths 0.1, weights (1, 2): 1/3 and 2/3; a -1000 log strength (underflow in
  # the linear domain) still normalises.
  firing = fuzzy.normalized_firing(jnp.log(jnp.array([[0.1, 0.1]])), jnp.log(jnp.array([1., 2.])))
  np.testing.assert_allclose(firing, [[1 / 3, 2 / 3]], rtol=1e-6)
  tiny = fuzzy.normalized_firing(jnp.array([[-1000.0, -1001.0]]), jnp.zeros(2))
  np.testing.assert_allclose(tiny, [[1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]],
                             rtol=1e-5)


def test_tsk_defuzzify_hand_values():
  # Two rules, P = 2 inputs u = (1, 2), D = 1: y_0 = 1*1 + 0*2 + 1 = 2, y_1 = 0*1 + 3*2 - 2
  # = 4; firing (0.25, 0.75): y = 0.5 + 3 = 3.5.
  firing = jnp.array([[0.25, 0.75]])
  u = jnp.array([[1.0, 2.0]])
  slopes = jnp.array([[[1.0], [0.0]], [[0.0], [3.0]]])   # [R, P, D]
  intercepts = jnp.array([[1.0], [-2.0]])
  np.testing.assert_allclose(fuzzy.tsk_defuzzify(firing, u, slopes, intercepts), [[3.5]])


def test_centroid_defuzzify_hand_values():
  # Output sets centred 0 (width 1) and 2 (width 3), firing (0.5, 0.5): the wider set
  # weighs 3x, centroid (0.5*1*0 + 0.5*3*2) / (0.5*1 + 0.5*3) = 1.5; one rule firing -> its
  # centre.
  centres, widths = jnp.array([[0.0], [2.0]]), jnp.array([[1.0], [3.0]])
  np.testing.assert_allclose(fuzzy.centroid_defuzzify(jnp.array([[0.5, 0.5]]), centres, widths),
                             [[1.5]])
  np.testing.assert_allclose(fuzzy.centroid_defuzzify(jnp.array([[0.0, 1.0]]), centres, widths),
                             [[2.0]])


def test_positive_parameterisation_roundtrip():
  for v in (0.01, 0.5, 1.0, 30.0):
    np.testing.assert_allclose(fuzzy.positive(fuzzy.inverse_positive(v)), v, rtol=1e-5)
  assert float(fuzzy.positive(jnp.array(-1e4))) > 0
  with pytest.raises(ValueError):
    fuzzy.inverse_positive(0.0)


# ----------------------------------------------------------------------------- module

VARIANTS = [
    dict(membership="gaussian", tnorm="product", defuzzifier="tsk",
         consequent_inputs="features"),
    dict(membership="bell", tnorm="softmin", defuzzifier="centroid", output_dim=5),
    dict(membership="gaussian", tnorm="softmin", defuzzifier="tsk",
         consequent_inputs="inputs", output_dim=4, normalize_inputs=False),
]


def _layer(kwargs, dtype=jnp.float32):
  """A tiny layer: M = 3 inputs, R = 5 rules (on F = 7 features)."""
  return fuzzy.FuzzyInference(num_inputs=3, num_rules=5, dtype=dtype, **kwargs)


def _init(layer, batch=8, width=7, seed=0):
  x = jax.random.normal(jax.random.key(seed), (batch, width))
  return x, jax.jit(layer.init)(jax.random.key(seed + 1), x)


@functools.lru_cache(maxsize=None)
def _initialised(variant: int):
  """(x [8, 7], variables) of _layer(VARIANTS[variant]): each compiled once per session."""
  return _init(_layer(VARIANTS[variant]))


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_module_shapes_and_state(variant):
  kwargs = VARIANTS[variant]
  layer = _layer(kwargs)
  x, variables = _initialised(variant)
  y, state = jax.jit(layer.apply)(variables, x)
  assert y.shape == (8, kwargs.get("output_dim") or 7) and y.dtype == jnp.float32
  assert state["inputs"].shape == (8, 3)
  assert np.all(np.abs(state["inputs"]) < 1)
  assert state["log_memberships"].shape == (8, 3, 5)
  assert np.all(np.asarray(state["log_memberships"]) <= 0)
  assert state["firing"].shape == state["log_firing"].shape == (8, 5)
  np.testing.assert_allclose(np.asarray(state["firing"]).sum(-1), 1.0, rtol=1e-5)
  # Initial centres: on every input a permutation of the even grid over [-0.8, 0.8].
  centres = np.sort(np.asarray(variables["params"]["centres"]), axis=1)
  np.testing.assert_allclose(centres, np.tile(np.linspace(-0.8, 0.8, 5), (3, 1)), atol=1e-6)
  widths = fuzzy.positive(variables["params"]["raw_widths"])
  np.testing.assert_allclose(widths, 0.5, rtol=1e-5)


def test_module_rejects_bad_names():
  with pytest.raises(ValueError, match="model.fuzzy_membership.*gaussian"):
    _init(fuzzy.FuzzyInference(membership="triangle"))
  with pytest.raises(ValueError, match="model.fuzzy_defuzzifier"):
    _init(fuzzy.FuzzyInference(defuzzifier="mom"))
  cfg = config_lib.base_config().model
  cfg.fuzzy = True
  cfg.fuzzy_tnorm = "lukasiewicz"
  with pytest.raises(ValueError, match="model.fuzzy_tnorm"):
    fuzzy.pre_hash_factory(cfg)


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_gradients_finite_and_nonzero_for_every_parameter(variant):
  layer = _layer(VARIANTS[variant])
  x, variables = _initialised(variant)
  shape = jax.eval_shape(layer.apply, variables, x)[0].shape
  target = jax.random.normal(jax.random.key(5), shape)

  def loss(params):
    (y, _), _ = layer.apply({**variables, "params": params}, x, train=True,
                            mutable=["batch_stats"])
    return jnp.sum(jnp.square(y - target))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"zero gradient for {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_numerical_gradient_check_tiny_layer(variant):
  # Central differences in float64 against the analytic gradient of the tiny layer (M = 3,
  # R = 5, F = 7), along random directions through all parameters and along each leaf.
  x32, variables32 = _initialised(variant)
  with jax.enable_x64(True):
    layer = _layer(VARIANTS[variant], dtype=jnp.float64)   # same parameters, float64 math
    x = jnp.asarray(x32, jnp.float64)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables32)
    # Move the rule weights and widths off their symmetric initial values.
    params = jax.tree.map(
        lambda a, k: a + 0.3 * jax.random.normal(k, a.shape, jnp.float64),
        variables["params"], _keys_like(variables["params"], jax.random.key(2)))
    shape = jax.eval_shape(layer.apply, variables, x)[0].shape
    w = jax.random.normal(jax.random.key(3), shape, jnp.float64)

    flat_p, unravel = flatten_util.ravel_pytree(params)

    @jax.jit
    def loss(flat):
      # Evaluation mode: the batch normalisation uses its running statistics (a fixed
      # affine map), so the check covers its scale and bias exactly.
      y = layer.apply({**variables, "params": unravel(flat)}, x)[0]
      return jnp.sum(w * jnp.sin(y))

    flat_g = np.asarray(jax.jit(jax.grad(loss))(flat_p))
    # Random directions through all parameters at once, then the first entry of each
    # leaf on its own, so that no parameter hides in the sum.
    rng = np.random.default_rng(0)
    directions = [d / np.linalg.norm(d) for d in rng.normal(size=(3,) + flat_p.shape)]
    for i in _first_index_of_each_leaf(params):
      directions.append(np.eye(1, flat_p.size, i)[0])
    eps = 1e-5
    for v in directions:
      numeric = float(loss(flat_p + eps * v) - loss(flat_p - eps * v)) / (2 * eps)
      analytic = float(flat_g @ v)
      assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)


def _keys_like(tree, key):
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))


def _first_index_of_each_leaf(tree):
  offset, out = 0, []
  for leaf in jax.tree.leaves(tree):
    out.append(offset)
    offset += int(np.size(leaf))
  return out


# ----------------------------------------------------------------------------- model hook

def _model_cfg(fuzzy_on: bool, head: str = "flat") -> ml_collections.ConfigDict:
  cfg = config_lib.base_config().model
  cfg.fuzzy = fuzzy_on
  cfg.head = head
  cfg.bits = 16
  cfg.fuzzy_rules = 4
  cfg.fuzzy_inputs = 3
  return cfg


@functools.lru_cache(maxsize=None)
def _build(fuzzy_on: bool, head: str = "flat", shapes_only: bool = False):
  """(model, variables, images [3, 16, 16, 1], schema), built once per test session;
  shapes_only: variables as ShapeDtypeStructs (no compilation)."""
  schema = schema_lib.chest_multilabel_schema()
  model = build_model(_model_cfg(fuzzy_on, head), schema)
  images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 1))
  keys = {"params": jax.random.key(1), "dropout": jax.random.key(2)}
  init = jax.eval_shape if shapes_only else lambda f, *a: jax.jit(f)(*a)
  variables = init(model.init, keys, images)
  return model, variables, images, schema


def _paths(tree):
  return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def test_fuzzy_off_is_the_same_network_without_the_layer():
  model_on, vars_on, images, _ = _build(True)
  model_off, vars_off, _, _ = _build(False, shapes_only=True)
  on, off = _paths(vars_on["params"]), _paths(vars_off["params"])
  assert off < on
  assert all("pre_hash" in p for p in on - off)
  out_on = fuzzy.fuzzy_states(model_on, vars_on, images)
  out_off = jax.eval_shape(model_off.apply, vars_off, images)
  assert set(out_on) - {"fuzzy"} == set(out_off)
  assert out_on["codes"].shape == out_off["codes"].shape == (3, 16)
  # The layer's output width is the trunk width: the hash layer's kernel has one shape.
  assert (vars_on["params"]["head"]["hash"]["dense"]["kernel"].shape
          == vars_off["params"]["head"]["hash"]["dense"]["kernel"].shape)
  assert fuzzy.pre_hash_factory(_model_cfg(False)) is None
  with pytest.raises(ValueError, match="no fuzzy inference layer"):
    fuzzy.fuzzy_states(model_off, vars_off, images)


@pytest.mark.parametrize("head", ["flat", "structured"])
def test_fuzzy_states_exposed(head):
  model, variables, images, _ = _build(True, head)
  outputs = fuzzy.fuzzy_states(model, variables, images)
  assert len(outputs["fuzzy"]) == 1
  path, state = next(iter(outputs["fuzzy"].items()))
  assert path.endswith("pre_hash/fis")
  assert state["firing"].shape == (3, 4)
  assert list(fuzzy.find_fuzzy_params(variables["params"])) == [path]
  if head == "flat":
    # The flat head's fuzzy layer reads the trunk features: rerunning the layer alone on
    # outputs["features"] with its variables reproduces the exposed state.
    layer = fuzzy.FuzzyInference(**fuzzy.fuzzy_kwargs_from_config(_model_cfg(True)))
    sub = {c: fuzzy_report.subtree(variables[c], path) for c in ("params", "batch_stats")}
    _, again = jax.jit(layer.apply)(sub, outputs["features"])
    for k in state:
      np.testing.assert_allclose(state[k], again[k], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- report

def test_rule_dump_and_membership_plot(tmp_path):
  model, variables, images, schema = _build(True)
  image = (np.asarray(images[1]) * 255).astype(np.uint8)
  labels = {"findings": schema["findings"].encode(["effusion", "edema"])}
  dump = fuzzy_report.explain_image(model, variables, image, top_rules=3, schema=schema,
                                    labels=labels, image_id=7)
  path = os.path.join(tmp_path, "rules.json")
  fuzzy_report.write_rule_dump(path, dump)
  with open(path) as f:
    loaded = json.load(f)
  assert loaded["labels"] == {"findings": ["effusion", "edema"]}
  assert set(loaded["predicted"]["findings"]) == set(schema_lib.CHEST_FINDINGS)
  assert len(loaded["code"]) == 16
  (layer_path, layer), = loaded["layers"].items()
  assert layer["num_inputs"] == 3 and layer["num_rules"] == 4 and len(layer["rules"]) == 3
  firing = [r["firing"] for r in layer["rules"]]
  assert firing == sorted(firing, reverse=True)
  # The dump agrees with the layer's state for that image.
  state = fuzzy.fuzzy_states(model, variables, jnp.asarray(image[None], jnp.float32) / 255.0)
  state = state["fuzzy"][layer_path]
  top = layer["rules"][0]
  np.testing.assert_allclose(top["firing"], float(np.max(state["firing"])), rtol=1e-5)
  np.testing.assert_allclose(
      [a["membership"] for a in top["antecedents"]],
      np.exp(np.asarray(state["log_memberships"])[0, :, top["rule"]]), rtol=1e-5)
  assert 0 <= layer["firing_entropy"] <= math.log(4) + 1e-9

  png = os.path.join(tmp_path, "memberships.png")
  fuzzy_report.plot_image_memberships(dump, variables, png)
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  params = fuzzy.find_fuzzy_params(variables["params"])[layer_path]
  with pytest.raises(ValueError, match="inputs has 2 values"):
    fuzzy_report.plot_memberships(params, png, inputs=[0.0, 0.1])


def test_membership_curves_peak_at_centres():
  _, variables = _initialised(1)   # the bell-membership variant
  params = variables["params"]
  centres = np.asarray(params["centres"])
  curves = fuzzy_report.membership_curves(params, centres[0])  # grid = input 0's centres
  np.testing.assert_allclose(np.diagonal(curves[:, 0, :]), 1.0, rtol=1e-5)
  assert fuzzy_report.membership_kind(params) == "bell"


def test_rule_label_association_hand_values():
  # Rule 0 fires 0.9 on the two effusion images and 0.1 on the third: overall 0.633...,
  # over effusion images 0.9 -> lift 0.9 / (1.9 / 3); over the edema image 0.1.
  firing = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
  labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]])
  assoc = fuzzy_report.rule_label_association(firing, labels, ("effusion", "edema", "mass"))
  assert [a["rule"] for a in assoc] == [0, 1]
  np.testing.assert_allclose(assoc[0]["mean_firing"], 1.9 / 3)
  assert list(assoc[0]["lift"]) == ["effusion", "edema"]      # "mass": no image has it
  np.testing.assert_allclose(assoc[0]["lift"]["effusion"], 0.9 / (1.9 / 3))
  np.testing.assert_allclose(assoc[1]["lift"]["edema"], 0.9 / (1.1 / 3))
