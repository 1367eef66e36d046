"""End-to-end trainer tests on 4 fake CPU devices (set in conftest.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dnh_jax import losses as losses_lib
from dnh_jax import train
from dnh_jax import config_lib


def tiny_config(steps=2, **overrides):
  """baseline.py:quick shrunk further: a few steps on a few hundred 32 px images."""
  import importlib.util
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "baseline.py")
  spec = importlib.util.spec_from_file_location("baseline_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("quick")
  c.data.num_examples = 400
  c.train.steps = steps
  c.train.batch_size = 16
  c.train.log_every = 1
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.train.warmup_steps = 0
  c.eval.ks = (10,)
  c.train.best_metric = "val/mAP@10"
  c.report.html = False  # the run report is tested in test_retriever.py
  for key, value in overrides.items():
    node = c
    *path_, last = key.split(".")
    for p in path_:
      node = node[p]
    node[last] = value
  return c


def _params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", "last", str(step), "default"))
  return jax.tree.map(np.asarray, restored["params"])


def test_two_step_run_on_four_devices(tmp_path):
  assert jax.device_count() == 4
  results = train.train_and_evaluate(tiny_config(steps=2), str(tmp_path))
  for key in ("test/mAP@10", "test/nDCG@10", "val/mAP@10", "test/bit_balance"):
    assert np.isfinite(results[key]), key
  assert 0.0 <= results["test/mAP@10"] <= 1.0
  on_disk = json.load(open(tmp_path / "results.json"))
  assert on_disk == pytest.approx(results)
  assert (tmp_path / "checkpoints" / "last" / "2").is_dir()
  assert json.load(open(tmp_path / "config.json"))["train"]["steps"] == 2
  assert (tmp_path / "split_manifest.json").is_file()
  log = [json.loads(l) for l in open(tmp_path / "logs" / "metrics.jsonl")]
  steps_logged = [r["step"] for r in log if "train/loss" in r]
  assert steps_logged == [1, 2]
  assert all(np.isfinite(r["train/grad_norm"]) for r in log if "train/grad_norm" in r)

  # A rerun of the finished workdir returns the recorded results: no second test row in
  # metrics.jsonl, train/seconds not overwritten with the rerun's ~0.
  again = train.train_and_evaluate(tiny_config(steps=2), str(tmp_path))
  assert again == on_disk
  assert len(open(tmp_path / "logs" / "metrics.jsonl").readlines()) == len(log)


def test_init_from_another_run(tmp_path):
  """model.init_from=<workdir>: a run with learning rate 0 keeps the weights of the
  source's best checkpoint."""
  train.train_and_evaluate(tiny_config(steps=2), str(tmp_path / "a"))
  config = tiny_config(steps=2, **{"model.init_from": str(tmp_path / "a"),
                                   "train.learning_rate": 0.0})
  train.train_and_evaluate(config, str(tmp_path / "b"))
  best = tmp_path / "a" / "checkpoints" / "best"
  step = max(int(d) for d in os.listdir(best) if d.isdigit())
  source = ocp.StandardCheckpointer().restore(str(best / str(step) / "default"))
  want = jax.tree.map(np.asarray, source["params"]["model"])
  jax.tree.map(np.testing.assert_array_equal, want, _params(tmp_path / "b", 2)["model"])


def test_resume_matches_uninterrupted_run(tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(tiny_config(steps=4), str(straight))
  partial = train.train_and_evaluate(
      tiny_config(steps=4, **{"train.stop_after_steps": 2}), str(resumed))
  assert partial == {"stopped_at_step": 2.0}
  assert not (resumed / "checkpoints" / "last" / "4").exists()
  assert not (resumed / "results.json").exists()
  train.train_and_evaluate(tiny_config(steps=4), str(resumed))
  a, b = _params(straight, 4), _params(resumed, 4)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_one_device_and_four_devices_agree(tmp_path):
  train.train_and_evaluate(tiny_config(steps=2, **{"mesh.data": 1}), str(tmp_path / "one"))
  train.train_and_evaluate(tiny_config(steps=2, **{"mesh.data": 4}), str(tmp_path / "four"))
  a, b = _params(tmp_path / "one", 2), _params(tmp_path / "four", 2)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


def test_evaluate_only_with_zero_steps(tmp_path):
  results = train.train_and_evaluate(tiny_config(steps=0), str(tmp_path))
  assert results["selected_step"] == 0 and np.isfinite(results["test/mAP@10"])


def test_non_finite_loss_stops_with_clear_error(tmp_path, monkeypatch):
  def nan_loss(outputs, labels, **kwargs):
    del labels, kwargs
    return jnp.nan * jnp.sum(outputs["codes"]), {}
  monkeypatch.setattr(losses_lib, "get_loss", lambda cfg, schema=None: nan_loss)
  with pytest.raises(FloatingPointError, match="Non-finite loss"):
    train.train_and_evaluate(tiny_config(steps=2), str(tmp_path))


def test_schedules_and_optimizer_choices():
  tc = config_lib.base_config().train
  tc.steps, tc.warmup_steps = 100, 10
  for name in ("constant", "cosine", "step"):
    tc.schedule = name
    lr = train.make_schedule(tc)
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(tc.learning_rate)
  tc.schedule = "cosin"
  with pytest.raises(ValueError, match="train.schedule='cosin'"):
    train.make_schedule(tc)
  tc.schedule, tc.optimizer = "cosine", "adamm"
  with pytest.raises(ValueError, match="train.optimizer='adamm'"):
    train.make_optimizer(tc)


def test_train_step_traces_once(tmp_path):
  """Three steps with fresh batches compile the step once (chex.assert_max_traces)."""
  import chex
  from dnh_jax import data as data_lib, models, parallel
  c = tiny_config()
  splits = data_lib.load_splits(c.data, seed=0, data_dir=train.default_data_dir(c))
  model = models.build_model(c.model, splits.schema)
  loss_fn, tx, mesh = losses_lib.get_loss(c.loss), train.make_optimizer(c.train), parallel.make_mesh()
  state, shardings = train.create_train_state(model, loss_fn, tx, mesh,
                                              splits.data["train"].images.shape[1:],
                                              jax.random.key(0))
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(
      lambda s, b: train.train_step(s, b, model=model, loss_fn=loss_fn, tx=tx, loss_cfg=c.loss,
                                    schema=splits.schema, base_key=jax.random.key(1)), n=1),
      donate_argnums=(0,))
  batcher = data_lib.Batcher(splits.data["train"], 16, seed=0, augment=True)
  for i in range(3):
    state, metrics = step(state, parallel.global_batch(batcher.batch(i), mesh))
  assert int(state["step"]) == 3 and np.isfinite(float(metrics["loss"]))
  # The trainer's own guard raises on a second trace (a batch of another shape).
  guarded = train.make_train_step(shardings, mesh, model=model, loss_fn=loss_fn, tx=tx,
                                  loss_cfg=c.loss, schema=splits.schema,
                                  base_key=jax.random.key(1))
  state, _ = guarded(state, parallel.global_batch(batcher.batch(0), mesh))
  small = {k: v[:8] for k, v in batcher.batch(1).items()}
  with pytest.raises(RuntimeError, match="traced again"):
    guarded(state, parallel.global_batch(small, mesh))
