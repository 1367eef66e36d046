"""Objective 4: independent sub-networks and held-out combinations (configs/untrained_combo.py)."""

import importlib.util
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import data as data_lib
from dnh_jax import losses as losses_lib
from dnh_jax import models as models_lib
from dnh_jax import train
from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import subcode_accuracy
from dnh_jax.models import backbones as backbones_lib
from dnh_jax.report import untrained_combo as report

SCHEMA = schema_lib.multi_characteristic_schema()
HELD_OUT = ("MRI/breast", "CT/brain", "US/chest")


def load_config(arg=None):
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "untrained_combo.py")
  spec = importlib.util.spec_from_file_location("untrained_combo_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config(arg="quick"):
  """untrained_combo.py:quick shrunk to a few steps on 240 images (10 per combination)."""
  c = load_config(arg)
  c.data.num_examples = 240
  c.train.steps = 4
  c.train.batch_size = 16
  c.train.warmup_steps = 0
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 4
  c.eval.ks = (100,)
  c.eval.preferences = ("organ",)   # fewer evaluator programs to compile
  return c


def _pairs(labels):
  return {(SCHEMA["modality"].vocabulary[m], SCHEMA["organ"].vocabulary[o])
          for m, o in zip(labels["modality"], labels["organ"])}


# ------------------------------------------------------------------------------- config

def test_models_share_data_split_and_evaluation():
  configs = {m: load_config(f"model={m}") for m in ("independent", "structured", "flat")}
  for m, c in configs.items():
    assert c.data == configs["independent"].data, m
    assert c.seed == configs["independent"].seed and c.eval == configs["independent"].eval
    assert c.model.head == m and c.model.bits == 48
  assert tuple(configs["independent"].data.held_out) == HELD_OUT
  assert configs["independent"].eval.query_groups == ("held_out",)
  weights = {m: c.loss.weights.to_dict() for m, c in configs.items()}
  assert weights == {"independent": {"subcode": 1.0, "whole": 0.0},
                     "structured": {"subcode": 1.0, "whole": 1.0},
                     "flat": {"subcode": 0.0, "whole": 1.0}}
  for c in configs.values():
    losses_lib.get_loss(c.loss, SCHEMA)  # every loss resolves in the registry


def test_config_arguments_are_checked():
  c = load_config("model=structured,whole=0,held_out=MRI/breast+CT/chest,combinations=all")
  assert c.loss.weights.whole == 0.0 and tuple(c.data.held_out) == ("MRI/breast", "CT/chest")
  assert c.data.combinations == "all"
  with pytest.raises(config_lib.ConfigArgError, match="model"):
    load_config("model=shared")
  with pytest.raises(config_lib.ConfigArgError, match="held_out"):
    load_config("held_out=MRI-breast")
  with pytest.raises(config_lib.ConfigArgError, match="whole=0 with model=flat"):
    load_config("model=flat,whole=0")
  with pytest.raises(config_lib.ConfigArgError, match="whole"):
    load_config("whole=lots")
  # Views, the validation-transfer pair and the invariance terms.
  c = load_config("views=none,val_held_out=none,adversary=0.5,mixstyle=0.3")
  assert tuple(c.model.views) == () and tuple(c.data.val_held_out) == ()
  assert c.loss.adversary == 0.5 and c.model.mixstyle == 0.3
  assert tuple(load_config().model.views) == ("patches", "contrast", "identity")
  assert load_config().model.view_patch == 4
  # Host augmentation off by default (its intensity jitter removes the modality's grey
  # levels); one switch brings it back, for every model alike.
  assert load_config().data.augment is False
  assert all(load_config(f"model={m},augment=true").data.augment
             for m in ("independent", "structured", "flat"))
  assert tuple(load_config("model=flat").model.views) == ()
  # auto skips a candidate that is a test pair.
  assert tuple(load_config("held_out=MRI/chest+CT/brain").data.val_held_out) == ("XR/brain",)
  with pytest.raises(config_lib.ConfigArgError, match="val_held_out"):
    load_config("val_held_out=CT/brain")
  with pytest.raises(config_lib.ConfigArgError, match="views"):
    load_config("views=mixup")


# ------------------------------------------------------------------------------- model

def _model_cfg(**kw):
  c = config_lib.base_config().model
  c.head, c.bits = "independent", 48
  for k, v in kw.items():
    c[k] = v
  return c


def _random_like(shapes, seed):
  """Fan-in scaled normal values for a tree of shapes: parameters without compiling a PRNG
  program (XLA:CPU takes seconds per random initialiser)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(
      rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]) or 1), s.dtype), shapes)


def _perturb_network(params, name, index):
  """Adds noise to every parameter of sub-network `index` (characteristic `name`)."""
  params = dict(params)
  noise = lambda a: a + _random_like(jax.ShapeDtypeStruct(a.shape, a.dtype), 7)
  params["backbones"] = {"stacked": jax.tree.map(
      lambda a: a.at[index].set(noise(a[index])), params["backbones"]["stacked"])}
  for prefix in ("hash_", "classifier_"):
    params[prefix + name] = jax.tree.map(noise, params[prefix + name])
  return params


@pytest.fixture(scope="module")
def independent_params():
  """Random parameters of the 48-bit independent small-CNN model on 16 px images (the
  layout is the same for every `model.stack_compute`)."""
  model = models_lib.build_model(_model_cfg(), SCHEMA)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 16, 16, 1)), jnp.float32)
  shapes = jax.eval_shape(model.init, {"params": jax.random.key(1)}, images)["params"]
  return images, _random_like(shapes, 1)


@pytest.mark.parametrize("compute", ["vmap", "unrolled"])
def test_subnetworks_share_no_parameters(compute, independent_params):
  images, params = independent_params
  model = models_lib.build_model(_model_cfg(stack_compute=compute), SCHEMA)
  # Every parameter belongs to exactly one sub-network: the stacked backbones (axis 0 =
  # characteristic) or a per-characteristic hash layer / classifier.
  assert set(params) == {"backbones"} | {f"{p}_{n}" for p in ("hash", "classifier")
                                         for n in SCHEMA.names}
  for leaf in jax.tree.leaves(params["backbones"]):
    assert leaf.shape[0] == 3
  apply = jax.jit(lambda p: model.apply({"params": p}, images))
  base = apply(params)
  for index, name in enumerate(SCHEMA.names):
    out = apply(_perturb_network(params, name, index))
    for other in SCHEMA.names:
      same = np.array_equal(out["subcodes"][other], base["subcodes"][other])
      assert same == (other != name), (name, other)
      assert np.array_equal(out["logits"][other], base["logits"][other]) == (other != name)
  np.testing.assert_array_equal(
      base["codes"], np.concatenate([base["subcodes"][n] for n in SCHEMA.names], -1))


class _TinyBatchNormNet(nn.Module):
  """A one-convolution backbone with BatchNorm: batch statistics at a test's cost."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    x = nn.Conv(4, (3, 3), strides=(4, 4), dtype=self.dtype)(images)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    return nn.relu(x).reshape(x.shape[0], -1)


def test_vmap_and_unrolled_compute_agree_with_batch_stats(monkeypatch):
  monkeypatch.setitem(backbones_lib.BACKBONES, "tiny_bn",
                      lambda dtype, name=None: _TinyBatchNormNet(dtype, name=name))
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 16, 16, 1)), jnp.float32)
  models = {c: models_lib.build_model(_model_cfg(backbone="tiny_bn", stack_compute=c), SCHEMA)
            for c in ("vmap", "unrolled")}
  variables = jax.jit(models["vmap"].init)({"params": jax.random.key(1)}, images)
  kernel = variables["params"]["backbones"]["stacked"]["Conv_0"]["kernel"]
  assert kernel.shape[0] == 3 and not np.allclose(kernel[0], kernel[1])  # own init each
  outs = {}
  for compute, model in models.items():
    codes, stats = jax.jit(lambda v, m=model: m.apply(v, images, train=True,
                                                      mutable=["batch_stats"]))(variables)
    evaluated = jax.jit(lambda v, m=model: m.apply(v, images))({**variables, **stats})
    outs[compute] = (codes["codes"], stats, evaluated["codes"])
  (a, sa, ea), (b, sb, eb) = outs["vmap"], outs["unrolled"]
  np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_allclose(ea, eb, atol=1e-5)
  moved = 0
  for x, y, x0 in zip(jax.tree.leaves(sa), jax.tree.leaves(sb),
                      jax.tree.leaves(variables["batch_stats"])):
    assert x.shape[0] == 3
    np.testing.assert_allclose(x, y, atol=1e-5)
    moved += int(not np.allclose(x, x0))
  assert moved > 0   # the training pass updated the stacked statistics


def test_per_characteristic_loss_trains_each_network_only_on_its_characteristic(
    independent_params):
  """The independent loss of sub-code c has zero gradient on every other network."""
  c = load_config()
  images, params = independent_params
  model = models_lib.build_model(_model_cfg(), SCHEMA)
  rng = np.random.default_rng(0)
  labels = {n: jnp.asarray(rng.integers(0, SCHEMA[n].size, 8), jnp.int32) for n in SCHEMA.names}
  loss_fn = losses_lib.get_loss(c.loss, SCHEMA)

  def terms(p, lab):
    out = model.apply({"params": p}, images)
    metrics = loss_fn(out, lab, cfg=c.loss, schema=SCHEMA, step=jnp.int32(0),
                      key=jax.random.key(2))[1]
    return jnp.stack([metrics[f"structured/subcode_{n}"] for n in SCHEMA.names])

  # One program: the three terms and their Jacobian (leaves [3 terms, ...]).
  value_and_jacobian = jax.jit(lambda p, lab: (terms(p, lab), jax.jacrev(terms)(p, lab)))
  values, grads = value_and_jacobian(params, labels)
  for index, name in enumerate(SCHEMA.names):
    stacked = [g[index] for g in jax.tree.leaves(grads["backbones"])]
    assert all(float(jnp.abs(g[i]).max()) == 0.0 for g in stacked
               for i in range(3) if i != index)
    assert any(float(jnp.abs(g[index]).max()) > 0.0 for g in stacked)
    for other in SCHEMA.names:
      if other != name:
        assert float(jnp.abs(grads[f"hash_{other}"]["dense"]["kernel"][index]).max()) == 0.0
    # Shuffling the labels of every other characteristic leaves term `name` unchanged.
    shuffled = {n: (v if n == name else v[::-1]) for n, v in labels.items()}
    np.testing.assert_allclose(value_and_jacobian(params, shuffled)[0][index],
                               values[index], rtol=1e-6)


# ------------------------------------------------------------------------------- data + run

def test_held_out_combinations_absent_from_training_batches(tmp_path):
  c = tiny_config()
  splits = data_lib.load_splits(c.data, seed=c.seed, data_dir=train.default_data_dir(c))
  for split in ("train", "val_query", "val_gallery"):
    assert not _pairs(splits.data[split].labels) & {tuple(p.split("/")) for p in HELD_OUT}
  for split in ("query", "gallery"):
    assert {tuple(p.split("/")) for p in HELD_OUT} <= _pairs(splits.data[split].labels)
  batcher = data_lib.Batcher(splits.data["train"], 16, seed=c.seed, augment=True)
  seen_in_batches = set()
  for step in range(2 * len(splits.data["train"]) // 16 + 1):   # two epochs
    seen_in_batches |= _pairs(batcher.batch(step))
  assert seen_in_batches == _pairs(splits.data["train"].labels)
  assert not seen_in_batches & {tuple(p.split("/")) for p in HELD_OUT}
  proof = splits.manifest["held_out"]["examples_per_split"]
  assert all(n == 0 for s in ("train", "val_query", "val_gallery") for n in proof[s].values())
  assert all(n > 0 for s in ("query", "gallery") for n in proof[s].values())
  # The validation-of-transfer pair: in the validation splits only, never a test pair.
  val_pair = tuple(c.data.val_held_out)
  assert val_pair == ("MRI/chest",) and not set(val_pair) & set(HELD_OUT)
  val_pairs = {tuple(p.split("/")) for p in val_pair}
  for split in ("train", "query", "gallery"):
    assert not _pairs(splits.data[split].labels) & val_pairs, split
  for split in ("val_query", "val_gallery"):
    assert val_pairs <= _pairs(splits.data[split].labels), split
  assert not seen_in_batches & val_pairs
  val_proof = splits.manifest["validation_transfer"]["examples_per_split"]
  assert all(n == 0 for s in ("train", "query", "gallery") for n in val_proof[s].values())
  assert all(n > 0 for s in ("val_query", "val_gallery") for n in val_proof[s].values())


@pytest.mark.parametrize("views", ["texture_organ", "none"])
def test_quick_run_writes_held_out_and_seen_metrics(tmp_path, views):
  results = train.train_and_evaluate(tiny_config(f"quick,views={views}"), str(tmp_path))
  # Validation reports the validation-transfer pair as its held-out group.
  assert results["val/held_out/num_queries"] > 0 and results["val/seen/num_queries"] > 0
  on_disk = json.load(open(tmp_path / "results.json"))
  assert on_disk == pytest.approx(results)
  for group in ("held_out", "seen"):
    for key in ("mAP@100", "nDCG@100", "organ/mAP@100", "organ/nDCG@100",
                "modality/knn_accuracy", "organ/knn_accuracy", "disease/knn_accuracy"):
      value = results[f"test/{group}/{key}"]
      assert 0.0 <= value <= 1.0, (group, key)
    assert results[f"test/{group}/num_queries"] > 0
  assert (results["test/held_out/num_queries"] + results["test/seen/num_queries"]
          == len(json.load(open(tmp_path / "split_manifest.json"))["ids"]["query"]))
  table = report.held_out_table(results, knn=10)
  assert "held-out" in table and "seen" in table and "organ" in table
  assert f"{results['test/held_out/mAP@100']:.4f}" in table


# ------------------------------------------------------------------------------- accuracy

def test_subcode_accuracy_by_hand():
  """Two characteristics of 2 bits each; gallery of 4, k = 1 and k = 3.

  Gallery bits (a | b): g0 = ++|++  g1 = ++|--  g2 = --|++  g3 = --|--, labels
  a = (0, 0, 1, 1), b = (0, 1, 0, 1). Query ++|-+ with a = 0, b = 1: on sub-code a the
  nearest are g0, g1 (distance 0, label 0): correct for k = 1 and k = 3 (votes 0, 0, 1).
  On sub-code b, -+ is at distance 1 from every gallery b-code (++, --, ++, --): the four
  tied items share the k places, labels 0 and 1 get equal votes and equal distances, so
  the smaller label (0) wins: wrong for both k. Query --|-- with a = 1, b = 0: a -> g2, g3 (label 1) correct; b -> g1, g3 at
  distance 0 (labels 1, 1): wrong for both k.
  """
  schema = schema_lib.Schema((schema_lib.Characteristic("a", ("x", "y")),
                              schema_lib.Characteristic("b", ("u", "v"))))
  gallery = np.array([[1, 1, 1, 1], [1, 1, -1, -1], [-1, -1, 1, 1], [-1, -1, -1, -1]])
  g_labels = {"a": np.array([0, 0, 1, 1]), "b": np.array([0, 1, 0, 1])}
  queries = np.array([[1, 1, -1, 1], [-1, -1, -1, -1]]) * 0.5   # real codes: sign matters
  q_labels = {"a": np.array([0, 1]), "b": np.array([1, 0])}
  for k in (1, 3):
    acc = subcode_accuracy.subcode_accuracy(queries, q_labels, gallery, g_labels, schema,
                                            (2, 2), k=k)
    assert acc == {"a/knn_accuracy": 1.0, "b/knn_accuracy": 0.0}
  # A flat code (no segments) scores the whole 4-bit code for every characteristic:
  # query 0 -> g0, g1 tied at distance 1 (a: both label 0; b: a 1 : 1 tie that goes to
  # label 0), query 1 -> g3 at distance 0 (k = 2: g1, g2 share the second place):
  # a 1/1 and b 0/2 either way.
  for k in (1, 2):
    acc = subcode_accuracy.subcode_accuracy(queries, q_labels, gallery, g_labels, schema,
                                            k=k)
    assert acc == {"a/knn_accuracy": 1.0, "b/knn_accuracy": 0.0}
  # Only g2, g3 vote (reference mask, as for the seen part of a gallery): on a both have
  # label 1 (query 0 wrong, query 1 right); on b query 0 is at distance 1 from both (a
  # 0.5 : 0.5 tie: label 0, wrong) and query 1 matches g3 (label 1, wrong).
  acc = subcode_accuracy.subcode_accuracy(queries, q_labels, gallery, g_labels, schema,
                                          (2, 2), k=1, reference=np.array([0, 0, 1, 1], bool))
  assert acc == {"a/knn_accuracy": 0.5, "b/knn_accuracy": 0.0}
  with pytest.raises(ValueError, match="segments"):
    subcode_accuracy.subcode_accuracy(queries, q_labels, gallery, g_labels, schema, (3, 2))
  with pytest.raises(ValueError, match="reference"):
    subcode_accuracy.subcode_accuracy(queries, q_labels, gallery, g_labels, schema, (2, 2),
                                      reference=np.zeros(4, bool))


def test_knn_vote_is_tie_aware():
  """k = 2 voters, five gallery items all at distance 1 from the query: labels 0, 0, 1,
  1, 1 in gallery order. Cutting by gallery index would take the first two (label 0,
  wrong). The tied group shares the 2 places: 0.4 each, label 0 gets 0.8, label 1 gets
  1.2 -> label 1. With one extra item of label 0 at distance 0, it votes 1 and the five
  share 1 place (0.2 each): label 0 gets 1.4, label 1 0.6 -> label 0."""
  query = np.array([[1, 1, 1]])
  gallery = np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1], [-1, 1, 1], [1, -1, 1]])
  labels = np.array([0, 0, 1, 1, 1])
  assert subcode_accuracy.knn_labels(query, gallery, labels, 2, k=2).tolist() == [1]
  gallery2 = np.concatenate([gallery, [[1, 1, 1]]])
  labels2 = np.concatenate([labels, [0]])
  assert subcode_accuracy.knn_labels(query, gallery2, labels2, 2, k=2).tolist() == [0]
  # k = 1 with a 2 : 3 tie: 0.4 vs 0.6 -> label 1 (the index cut would say 0).
  assert subcode_accuracy.knn_labels(query, gallery, labels, 2, k=1).tolist() == [1]
  # Equal votes go to the nearer voters: (distance 0, label 1), (distance 1, label 0),
  # k = 2 -> 1 : 1, and label 1 is nearer although label 0 is the smaller label.
  g3 = np.array([[1, 1, 1], [-1, 1, 1]])
  assert subcode_accuracy.knn_labels(query, g3, np.array([1, 0]), 2, k=2).tolist() == [1]


def test_comparison_table_lists_models_side_by_side():
  runs = {m: {"test/held_out/mAP@100": v, "test/seen/mAP@100": v + 0.1,
              "test/held_out/organ/knn_accuracy": 0.5}
          for m, v in (("independent", 0.7), ("flat", 0.2))}
  table = report.comparison_table(runs).splitlines()
  assert table[0] == ("| metric | independent held-out | independent seen | flat held-out "
                      "| flat seen |")
  assert table[2] == "| mAP@100 (exact combination) | 0.700 | 0.800 | 0.200 | 0.300 |"
  assert "| organ sub-code k-NN accuracy | 0.500 | - | 0.500 | - |" in table
