"""Jaccard multi-label loss (hand values, NumPy reference, registry) and a quick run of
configs/fuzzy_multilabel.py."""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnh_jax import config_lib
from dnh_jax import losses as losses_lib
from dnh_jax import train
from dnh_jax.data import schema as schema_lib
from dnh_jax.losses import multilabel
from dnh_jax.report import fuzzy_report


def test_jaccard_target_table_published_example():
  # K = 16, three labels in the union ({a, b, c} against {}, {a}, {a, b}, {a, b, c}):
  # n2 = 0, 1, 2, 3 -> floor(16 (1 - n2/3)) = 16, 10, 5, 0.
  d = multilabel.jaccard_target_distance(
      jnp.array([[1, 1, 1]]), 16, jnp.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]))
  np.testing.assert_array_equal(d, [[16, 10, 5, 0]])
  # Symmetric in its arguments.
  np.testing.assert_array_equal(multilabel.jaccard_target_distance(
      jnp.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]), 16, jnp.array([[1, 1, 1]])),
                                [[16], [10], [5], [0]])


def test_jaccard_target_properties():
  y = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]])
  d = np.asarray(multilabel.jaccard_target_distance(y, 48))
  assert d.dtype == np.int32
  np.testing.assert_array_equal(d, d.T)
  np.testing.assert_array_equal(np.diagonal(d), 0)      # empty sets are equal too
  assert d[1, 2] == 0 and d[1, 0] == 48 and d[0, 4] == 48
  # n2 = 2, n1 = 4 -> floor(48 * 1/2) = 24; n2 = 2, n1 = 3 at K = 48 -> 16 exactly (a
  # float32 1 - 2/3 would give 15.999999 and floor to 15).
  assert d[0, 3] == 24
  assert int(multilabel.jaccard_target_distance(jnp.array([[1, 1, 0]]), 48,
                                                jnp.array([[1, 1, 1]]))[0, 0]) == 16


def _numpy_jaccard_loss(codes, labels, logits, regression, classification):
  k = codes.shape[1]
  unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
  d = np.maximum(0.5 * k * (1 - unit @ unit.T), 0)
  b = len(codes)
  total = []
  for i in range(b):
    for j in range(b):
      if i == j:
        continue
      n2 = np.sum(labels[i] & labels[j])
      n1 = np.sum(labels[i] | labels[j])
      target = math.floor(k * (1 - n2 / n1)) if n1 else 0
      total.append(np.log(np.cosh((target - d[i, j]) / k)))
  reg = np.mean(total)
  p = 1 / (1 + np.exp(-logits))
  bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(axis=1)
  # Both images of each ordered pair (i, j), i != j.
  pair_bce = np.mean([bce[i] + bce[j] for i in range(b) for j in range(b) if i != j])
  return regression * reg + classification * pair_bce


def test_jaccard_loss_matches_numpy_reference():
  rng = np.random.default_rng(0)
  codes = np.tanh(rng.normal(size=(6, 16)))
  labels = (rng.random((6, 5)) < 0.4).astype(np.int32)
  labels[0] = 0
  logits = rng.normal(size=(6, 5))
  loss, metrics = jax.jit(multilabel.jaccard_loss)(
      jnp.asarray(codes, jnp.float32), jnp.asarray(labels), jnp.asarray(logits, jnp.float32))
  expected = _numpy_jaccard_loss(codes, labels, logits, 1.0, 1.5)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert set(metrics) == {"jaccard/regression", "jaccard/classification",
                          "jaccard/mean_target", "jaccard/mean_distance"}
  # The gradient reaches the codes and the logits and is finite.
  g_codes, g_logits = jax.jit(jax.grad(
      lambda c, l: multilabel.jaccard_loss(c, jnp.asarray(labels), l)[0], argnums=(0, 1)))(
          jnp.asarray(codes, jnp.float32), jnp.asarray(logits, jnp.float32))
  for g in (g_codes, g_logits):
    assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)
  with pytest.raises(ValueError, match="needs logits"):
    multilabel.jaccard_loss(jnp.asarray(codes), jnp.asarray(labels), None)


def _loss_cfg(**weights):
  cfg = config_lib.base_config().loss
  cfg.name = "jaccard"
  cfg.similarity = "shared"
  cfg.weights = ml_collections.ConfigDict(weights)
  return cfg


def test_registry_entry():
  schema = schema_lib.chest_multilabel_schema()
  assert "jaccard" in losses_lib.LOSSES
  assert losses_lib.DEFAULT_WEIGHTS["jaccard"] == {"regression": 1.0, "classification": 1.5}
  rng = np.random.default_rng(1)
  labels = {"findings": jnp.asarray((rng.random((4, 13)) < 0.3).astype(np.uint8))}
  outputs = {"codes": jnp.tanh(jnp.asarray(rng.normal(size=(4, 16)), jnp.float32)),
             "logits": {"findings": jnp.asarray(rng.normal(size=(4, 13)), jnp.float32)}}
  cfg = _loss_cfg(classification=0.5)
  fn = losses_lib.get_loss(cfg, schema)
  loss, metrics = fn(outputs, labels, cfg=cfg, schema=schema, step=jnp.int32(0),
                     key=jax.random.key(0))
  direct, _ = multilabel.jaccard_loss(outputs["codes"], labels["findings"],
                                      outputs["logits"]["findings"], classification=0.5)
  np.testing.assert_allclose(loss, direct, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], direct, rtol=1e-6)

  with pytest.raises(ValueError, match="unknown keys.*'jaccard'"):
    losses_lib.get_loss(_loss_cfg(regresion=1.0), schema)
  no_logits = {"codes": outputs["codes"]}
  with pytest.raises(ValueError, match="model.classifier=True"):
    fn(no_logits, labels, cfg=cfg, schema=schema, step=0, key=jax.random.key(0))
  # Without the classification term the logits are not needed.
  cfg0 = _loss_cfg(classification=0.0)
  loss0, _ = losses_lib.get_loss(cfg0, schema)(no_logits, labels, cfg=cfg0, schema=schema,
                                               step=0, key=jax.random.key(0))
  assert np.isfinite(float(loss0))
  single = schema_lib.multi_characteristic_schema()
  cfg_all = _loss_cfg()
  cfg_all.similarity = "disease"
  with pytest.raises(ValueError, match="multi-label"):
    losses_lib.get_loss(cfg_all, single)(
        {"codes": outputs["codes"]}, {"disease": jnp.zeros(4, jnp.int32)}, cfg=cfg_all,
        schema=single, step=0, key=jax.random.key(0))


def _config_module():
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "fuzzy_multilabel.py")
  spec = importlib.util.spec_from_file_location("fuzzy_multilabel_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_config_arguments():
  module = _config_module()
  c = module.get_config("bits=16,fuzzy=off,loss=idhn")
  assert (c.model.bits, c.model.fuzzy, c.loss.name) == (16, False, "idhn")
  assert c.eval.relevance == "shared" and tuple(c.eval.query_groups) == ("label_count",)
  assert c.train.best_metric == "val/nDCG@100" and c.data.multilabel
  c = module.get_config("data=chestxray14,membership=bell")
  assert c.data.name == "chestxray14" and c.model.backbone == "alexnet"
  assert c.model.fuzzy and c.model.fuzzy_membership == "bell"
  c = module.get_config("moderate,steps=50")
  assert (c.data.image_size, c.data.num_examples, c.train.steps) == (32, 4000, 50)
  for bad in ("loss=dpsh", "fuzzy=maybe", "data=mnist", "rules=0", "quikc"):
    with pytest.raises(config_lib.ConfigArgError):
      module.get_config(bad)


def test_quick_run_trains_and_evaluates(tmp_path):
  c = _config_module().get_config("quick,bits=16")
  c.data.num_examples = 400
  c.data.image_size = 32
  c.train.steps = 12
  c.train.batch_size = 16       # divisible by the 4 fake devices of conftest.py
  c.train.log_every = 4
  c.train.eval_every = 12
  c.train.checkpoint_every = 12
  c.eval.batch_size = 32
  results = train.train_and_evaluate(c, str(tmp_path))
  for key in ("test/nDCG@100", "test/ACG@100", "test/wMAP@100", "test/mAP@100",
              "val/nDCG@100"):
    assert np.isfinite(results[key]), key
  assert 0 <= results["test/nDCG@100"] <= 1
  assert any(k.startswith("test/labels=1/") for k in results)
  assert results["train/steps"] == 12
  log = [json.loads(line) for line in open(tmp_path / "logs" / "metrics.jsonl")]
  losses = [r["train/loss"] for r in log if "train/loss" in r]
  assert len(losses) == 3 and all(np.isfinite(losses))
  assert any("train/jaccard/regression" in r for r in log)

  # The trained run's rule dump: an image without findings always exists in the split.
  dump = fuzzy_report.explain_workdir(str(tmp_path), findings=(), top_rules=2)
  assert dump["labels"] == {"findings": []}
  (layer,) = dump["layers"].values()
  assert len(layer["rules"]) == 2 and "associated_labels" in layer["rules"][0]
  assert (tmp_path / "fuzzy" / "rule_dump.json").is_file()
  assert (tmp_path / "fuzzy" / "memberships.png").is_file()
