"""Trainer: train state, jitted sharded train step, evaluation loop, checkpoints.

`train_and_evaluate(config, workdir)` is the whole job: load and split the data, build
model, loss and optimizer, resume or initialise, train with periodic validation, keep the
best checkpoint by a validation metric, evaluate that checkpoint on the test split and
write `results.json`. It returns the results so tests can assert on them. A config with
`train.steps = 0` evaluates the initial codes ("evaluate only").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from dnh_jax import checkpointing
from dnh_jax import metric_writing
from dnh_jax import parallel
from dnh_jax import data as data_lib
from dnh_jax import losses as losses_lib
from dnh_jax import models as models_lib
from dnh_jax import retrieval as retrieval_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.evaluation import split_checks
from dnh_jax.evaluation import evaluator as evaluator_lib
from dnh_jax.evaluation import groups as groups_lib
from dnh_jax.evaluation import sharded as sharded_lib
from dnh_jax.evaluation import subcode_accuracy
from dnh_jax.models import pretrained as pretrained_lib
from dnh_jax.utils import atomic_write_json, format_eta

State = dict  # {"step", "params": {"model", "loss"}, "batch_stats", "opt_state"}
# fold_in tags of the training views' and MixStyle's keys within a step's key.
VIEWS_STREAM = 0x71E5
MIXSTYLE_STREAM = 0x3175


# ----------------------------------------------------------------------------- optimizer

def make_schedule(tc: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule from `config.train` (constant | cosine | step, with warmup)."""
  lr, warm, steps = tc.learning_rate, int(tc.warmup_steps), max(int(tc.steps), 1)
  warm = min(warm, max(steps - 1, 0))
  if tc.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif tc.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(steps - warm, 1))
  elif tc.schedule == "step":
    main = optax.exponential_decay(lr, int(tc.decay_every), float(tc.decay_rate),
                                   staircase=True)
  else:
    raise ValueError(f"train.schedule={tc.schedule!r}; choose one of "
                     "['constant', 'cosine', 'step']")
  if warm <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


OPTIMIZERS = {
    "adam": lambda lr, wd: optax.adam(lr),  # no weight decay: make_optimizer refuses one
    "adamw": lambda lr, wd: optax.adamw(lr, weight_decay=wd),
    "sgd": lambda lr, wd: optax.chain(optax.add_decayed_weights(wd),
                                      optax.sgd(lr, momentum=0.9, nesterov=True)),
}


def make_optimizer(tc: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """optax optimizer from `config.train` (optimizer, schedule, weight decay, clipping)."""
  if tc.optimizer not in OPTIMIZERS:
    raise ValueError(f"train.optimizer={tc.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
  if tc.optimizer == "adam" and tc.weight_decay:
    # Adam's L2 penalty and AdamW's decoupled decay are different optimizers; silently
    # swapping one for the other would hide which one a result used.
    raise ValueError(f"train.optimizer='adam' with train.weight_decay={tc.weight_decay}: "
                     "Adam has no weight decay here; use train.optimizer='adamw' "
                     "(decoupled weight decay) or train.weight_decay=0")
  tx = OPTIMIZERS[tc.optimizer](make_schedule(tc), float(tc.weight_decay))
  if tc.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(float(tc.grad_clip)), tx)
  return tx


# ----------------------------------------------------------------------------- state

def create_train_state(model, loss_fn, tx, mesh, image_shape, key) -> tuple[State, Any]:
  """Initialises the state on its devices, shape first (`jax.eval_shape`).

  Args:
    model: a Flax module whose apply returns a dict with "codes".
    loss_fn: the loss; if it has `init_params(key, outputs)` its parameters are trained
      with the model's (e.g. an adversarial pair discriminator).
    tx: the optax optimizer.
    mesh: device mesh; the state is replicated over it (data parallelism).
    image_shape: (H, W, C) of one image.
    key: PRNG key.

  Returns:
    (state, state_shardings).
  """
  sample = jnp.zeros((2, *image_shape), jnp.float32)

  def init():
    k_params, k_drop, k_loss = jax.random.split(key, 3)
    variables = model.init({"params": k_params, "dropout": k_drop}, sample, train=False)
    params = {"model": variables["params"], "loss": {}}
    if hasattr(loss_fn, "init_params"):
      outputs = model.apply(variables, sample, train=False)
      params["loss"] = loss_fn.init_params(k_loss, outputs)
    return {"step": jnp.zeros([], jnp.int32), "params": params,
            "batch_stats": variables.get("batch_stats", {}), "opt_state": tx.init(params)}

  shapes = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: parallel.replicated(mesh), shapes)
  return jax.jit(init, out_shardings=shardings)(), shardings


def health_metrics(grads, params, codes: jax.Array) -> dict[str, jax.Array]:
  """Gradient / parameter norms, quantization error and bit balance of real codes [B, K].

  bit_balance = 1 - mean_k |mean_b sign(h_bk)|: 1 when every bit is +1 for half the batch,
  0 when every bit is constant.
  """
  bits = jnp.where(codes >= 0, 1.0, -1.0)
  return {"grad_norm": optax.tree_utils.tree_norm(grads),
          "param_norm": optax.tree_utils.tree_norm(params),
          "quantization_error": jnp.mean(jnp.square(codes - bits)),
          "bit_balance": 1.0 - jnp.mean(jnp.abs(jnp.mean(bits, axis=0)))}


def train_step(state: State, batch: dict, *, model, loss_fn, tx, loss_cfg, schema,
               base_key) -> tuple[State, dict]:
  """One optimisation step (pure; jitted with donated state by `make_train_step`).

  Args:
    state: the train state.
    batch: {"image": float32[B, H, W, 1], <characteristic>: labels [B] or [B, V]}.

  Returns:
    (new state, metrics: loss, loss terms and health metrics, all scalars).
  """
  step = state["step"]
  k_step = jax.random.fold_in(base_key, step)
  k_drop, k_loss = jax.random.split(k_step)
  # Per-network views (models/views.py) get their own stream, apart from the split above,
  # so models without views keep exactly the keys (and numbers) they had.
  k_views = jax.random.fold_in(k_step, VIEWS_STREAM)
  k_mix = jax.random.fold_in(k_step, MIXSTYLE_STREAM)
  labels = {name: batch[name] for name in schema.names}
  has_stats = bool(jax.tree.leaves(state["batch_stats"]))
  trains_own_params = hasattr(loss_fn, "init_params")

  def objective(params):
    variables = {"params": params["model"]}
    if has_stats:
      variables["batch_stats"] = state["batch_stats"]
    outputs, updates = model.apply(variables, batch["image"], train=True,
                                   rngs={"dropout": k_drop, "views": k_views,
                                         "mixstyle": k_mix},
                                   mutable=["batch_stats"])
    extra = {"params": params["loss"]} if trains_own_params else {}
    loss, terms = loss_fn(outputs, labels, cfg=loss_cfg, schema=schema, step=step,
                          key=k_loss, **extra)
    return loss, (terms, updates.get("batch_stats", state["batch_stats"]), outputs["codes"])

  (loss, (terms, batch_stats, codes)), grads = jax.value_and_grad(
      objective, has_aux=True)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, **terms, **health_metrics(grads, params, codes)}
  return {"step": step + 1, "params": params, "batch_stats": batch_stats,
          "opt_state": opt_state}, metrics


def make_train_step(state_shardings, mesh, **static) -> Callable:
  """Jits `train_step` with donated state, explicit shardings and a one-trace guard.

  A second trace means the state or batch changed shape or dtype mid-run (a silent
  recompilation on every such step); it raises instead. Tests check the same property
  with `chex.assert_max_traces`.
  """
  bound = functools.partial(train_step, **static)
  traces = []

  def step_fn(state, batch):
    traces.append(jax.tree.map(lambda x: (x.shape, x.dtype), batch))
    if len(traces) > 1:
      raise RuntimeError(f"train_step traced again: batch went from {traces[0]} to "
                         f"{traces[-1]}; every batch must have the same shapes and dtypes")
    return bound(state, batch)

  return jax.jit(step_fn, in_shardings=(state_shardings, parallel.data_sharding(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=(0,))


# ----------------------------------------------------------------------------- evaluation

@dataclasses.dataclass(frozen=True)
class Encoder:
  """The model's inference function, in the two layouts evaluation uses.

  Calling it returns the outputs replicated to every process (one-process evaluation);
  `packed_sharded` returns packed codes uint32[B, W] that stay row-sharded on the devices
  that computed them (multi-process evaluation, see `encode_splits`).
  """

  replicated: Callable
  packed_sharded: Callable

  def __call__(self, variables, images):
    return self.replicated(variables, images)


def make_encoder(model, mesh) -> Encoder:
  """jitted (variables, images [B, H, W, 1]) -> model outputs (see `Encoder`)."""
  apply = lambda variables, images: model.apply(variables, images, train=False)
  shardings = (parallel.replicated(mesh), parallel.data_sharding(mesh))
  return Encoder(
      replicated=jax.jit(apply, in_shardings=shardings,
                         out_shardings=parallel.replicated(mesh)),
      packed_sharded=jax.jit(lambda v, x: retrieval_lib.pack_codes(apply(v, x)["codes"]),
                             in_shardings=shardings, out_shardings=parallel.data_sharding(mesh)))


model_variables = checkpointing.model_variables


def encode(encoder, state: State, images: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """Real codes of uint8 images [N, H, W, 1] -> float32 [N, K], in fixed-size batches.

  One process only (`encode_splits` encodes multi-process runs with
  `sharded.encode_to_shards`); each batch is sharded over the devices and the codes come
  back replicated.
  """
  n_dev = mesh.devices.size
  batch_size = max(n_dev, batch_size - batch_size % n_dev)
  variables = model_variables(state)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:  # pad: one compiled shape for the whole split
      chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
    batch = parallel.global_batch({"image": data_lib.images_to_float(chunk)}, mesh)
    out.append(np.asarray(encoder(variables, batch["image"])["codes"])[:n])
  return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SplitCodes:
  """The codes of a query and a gallery split, in the layout the process count allows.

  One process: real codes [N, K], replicated, evaluated by `Evaluator`. Several processes:
  each process encodes only its own devices' row blocks; the packed gallery stays on those
  devices (`ShardedCodes`) and `ShardedEvaluator` adds per-process integer sums
  (evaluation/sharded.py), so the numbers equal the one-process ones exactly.

  Attributes:
    query: real [Q, K] or packed uint32 [Q, W] (gathered: queries are few).
    gallery: real [N, K] or `ShardedCodes`.
    evaluator: `Evaluator` or `ShardedEvaluator`.
    knn_codes: () -> (query, gallery) codes with the sign of the hash bits, gathered, for
      the k-NN diagnostic (`subcode_accuracy`; not distributed).
    bit_balance: () -> 1 - mean_k |mean_n sign(h_nk)| over the gallery.
  """

  query: Any
  gallery: Any
  evaluator: type
  knn_codes: Callable[[], tuple[np.ndarray, np.ndarray]]
  bit_balance: Callable[[], float]


def encode_splits(encoder: Encoder, state: State, query, gallery, *, mesh,
                  batch_size: int) -> SplitCodes:
  """Encodes two splits for `evaluate` (see `SplitCodes`)."""
  if jax.process_count() == 1:
    q_codes, g_codes = (encode(encoder, state, split.images, mesh, batch_size)
                        for split in (query, gallery))
    bits = np.where(g_codes >= 0, 1.0, -1.0)
    return SplitCodes(q_codes, g_codes, evaluator_lib.Evaluator, lambda: (q_codes, g_codes),
                      lambda: float(1.0 - np.mean(np.abs(bits.mean(axis=0)))))
  variables = model_variables(state)
  encode_fn = functools.partial(encoder.packed_sharded, variables)
  q_codes, g_codes = (
      sharded_lib.encode_to_shards(encode_fn, split.images, mesh, parallel.DATA_AXIS,
                                   batch_size, data_lib.images_to_float)
      for split in (query, gallery))
  sample = jax.ShapeDtypeStruct((mesh.devices.size, *gallery.images.shape[1:]), jnp.float32)
  num_bits = jax.eval_shape(encoder.replicated, variables, sample)["codes"].shape[-1]
  q_packed = q_codes.gather()
  knn_codes = lambda: (retrieval_lib.unpack_codes(q_packed, num_bits),
                       retrieval_lib.unpack_codes(g_codes.gather(), num_bits))
  return SplitCodes(q_packed, g_codes, sharded_lib.ShardedEvaluator, knn_codes,
                    lambda: sharded_lib.bit_balance(g_codes, num_bits))


def evaluate(encoder, state, splits, query: str, gallery: str, *, config, mesh,
             segments) -> dict[str, float]:
  """Encodes a query and a gallery split and computes the configured metrics.

  Returns:
    Flat dict: "mAP@100", ..., "<preference>/mAP@100", "<group>/<metric>", "bit_balance".
  """
  ec = config.eval
  q, g = splits.data[query], splits.data[gallery]
  codes = encode_splits(encoder, state, q, g, mesh=mesh, batch_size=ec.batch_size)
  ev = codes.evaluator(splits.schema, ks=tuple(ec.ks), relevance=ec.relevance,
                       preferences=tuple(ec.preferences), segments=tuple(segments),
                       ties=ec.ties)
  per_query = ev.per_query(codes.query, q.labels, codes.gallery, g.labels)
  k_nn = int(ec.subcode_knn)  # > 0: k-NN accuracy of each sub-code's characteristic
  if k_nn:
    q_knn, g_knn = codes.knn_codes()
    # With held-out pairs only the gallery items of seen pairs vote (see subcode_accuracy).
    voters = (groups_lib.held_out_groups(g.labels, splits.schema, config.data, gallery)["seen"]
              if groups_lib.held_out_pairs(config.data, gallery) else None)

  def run(mask=None):
    out = ev.summarize(per_query, mask)
    if k_nn:
      pick = slice(None) if mask is None else mask
      out.update(subcode_accuracy.subcode_accuracy(
          q_knn[pick], {k: v[pick] for k, v in q.labels.items()}, g_knn, g.labels,
          splits.schema, segments, k=k_nn, reference=voters))
    return out

  results = run()
  for group_rule in ec.query_groups:
    for name, mask in groups_lib.query_groups(group_rule, q.labels, splits.schema,
                                              config.data, query).items():
      if mask.any():
        for k, v in run(mask).items():
          results[f"{name}/{k}"] = v
        results[f"{name}/num_queries"] = float(mask.sum())
  results["bit_balance"] = codes.bit_balance()
  return {k: float(v) for k, v in results.items()}


# ----------------------------------------------------------------------------- main loop

def _log(msg: str):
  if jax.process_index() == 0:
    print(msg, flush=True)
  logging.info(msg)


def default_data_dir(config) -> str:
  """Where TFDS builders write (`data.pipeline.default_data_dir` of `config.data`)."""
  return data_lib.default_data_dir(config.data)


def _read_results(path: str) -> dict[str, float] | None:
  """The results of a finished run, or None when the file is missing or unreadable."""
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError):
    return None
  return results if isinstance(results, dict) and "selected_step" in results else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       after_run: Callable | None = None) -> dict[str, float]:
  """Trains and evaluates; writes config.json, results.json, checkpoints and logs.

  Args:
    config: an experiment config (see dnh_jax/config_lib.base_config).
    workdir: output folder; a run finding checkpoints there resumes.
    after_run: called as after_run(config, workdir, splits) on process 0 once
      results.json is written (the entry points pass the run report,
      `dnh_jax.report.run_report.write_after_run`, which sits above the trainer).

  Returns:
    The flat results dict also written to `<workdir>/results.json`.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    atomic_write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
  tc = config.train
  # The train section is checked before any data is read: a typo fails in a second.
  tx = make_optimizer(tc)
  checkpointing.check_best_mode(tc.best_mode)
  mesh = parallel.make_mesh(config.mesh.data)
  parallel.check_batch_size(tc.batch_size, mesh)

  splits = data_lib.load_splits(config.data, seed=config.seed, data_dir=default_data_dir(config))
  # Fail before compiling anything when a split is too small to evaluate (split_checks).
  split_checks.check_splits(splits, relevance=config.eval.relevance,
                            batch_size=tc.batch_size, log=_log)
  if jax.process_index() == 0:
    data_lib.write_manifest(splits, os.path.join(workdir, "split_manifest.json"))
  schema: schema_lib.Schema = splits.schema
  model = models_lib.build_model(config.model, schema)
  segments = () if config.model.head == "flat" else models_lib.segments(config.model, schema)
  loss_fn = losses_lib.get_loss(config.loss, schema)  # validated against the data now
  root_key = jax.random.key(config.seed)
  init_key, step_key = jax.random.split(root_key)
  image_shape = splits.data["train"].images.shape[1:]
  state, shardings = create_train_state(model, loss_fn, tx, mesh, image_shape, init_key)
  ckpt = checkpointing.Checkpoints(os.path.join(workdir, "checkpoints"),
                                   keep=tc.keep_checkpoints, best_metric=tc.best_metric,
                                   best_mode=tc.best_mode)
  # Resume order: (1) the latest step in <workdir>/checkpoints/last that restores (a
  # corrupt one is moved aside with a warning and the previous step tried); (2) otherwise
  # a fresh initialisation from config.seed, the backbone(s) then loaded from
  # model.init_from when given (models/pretrained.py). Batches and step keys depend only on
  # (seed, step), so a resumed run continues exactly as an uninterrupted one would.
  restored = ckpt.restore_last_good(checkpointing.abstract(state), log=_log)
  if restored is not None:
    state = restored
    _log(f"Resumed from {workdir}/checkpoints/last at step {int(state['step'])}")
  elif config.model.init_from:
    state = jax.device_put(pretrained_lib.init_from(state, config.model, log=_log), shardings)
  start = int(state["step"])
  finished = _read_results(os.path.join(workdir, "results.json")) if start >= tc.steps else None
  if finished is not None:
    # A rerun of a finished workdir: evaluating again would log a second test row and
    # report ~0 training seconds; the recorded results stand.
    ckpt.close()
    _log(f"{workdir} is finished (step {start}, results.json); returning its results")
    return finished

  writer = metric_writing.create_writer(os.path.join(workdir, "logs"))
  try:
    results = _train_loop(config, workdir, splits, mesh, model, loss_fn, tx, state, shardings,
                          step_key, segments, ckpt, writer)
  except KeyboardInterrupt:
    ckpt.wait()   # a checkpoint being written is complete before it is reported safe
    raise checkpointing.Interrupted(ckpt.latest_step()) from None
  finally:
    ckpt.close()
    writer.close()
  if jax.process_index() == 0 and "stopped_at_step" not in results:
    atomic_write_json(os.path.join(workdir, "results.json"), results)
    if after_run is not None:
      after_run(config, workdir, splits)
  return results


def _train_loop(config, workdir, splits, mesh, model, loss_fn, tx, state, shardings, step_key,
                segments, ckpt, writer) -> dict[str, float]:
  """Steps `state` to `train.steps` with periodic validation, then tests the best state."""
  del workdir
  tc, schema = config.train, splits.schema
  start = int(state["step"])
  step_fn = make_train_step(shardings, mesh, model=model, loss_fn=loss_fn, tx=tx,
                            loss_cfg=config.loss, schema=schema, base_key=step_key)
  encoder = make_encoder(model, mesh)
  batcher = data_lib.Batcher(splits.data["train"], tc.batch_size, seed=config.seed,
                             augment=config.data.augment, process_index=jax.process_index(),
                             process_count=jax.process_count())
  run_eval = functools.partial(evaluate, encoder, config=config, mesh=mesh, segments=segments)
  val_history: dict[int, dict[str, float]] = {}

  def validate(state, step):
    val = {f"val/{k}": v for k, v in run_eval(state, splits, "val_query", "val_gallery").items()}
    val_history[step] = val
    writer.write_scalars(step, val)
    ckpt.save_best(step, state, val)
    _log(f"step {step} validation: " + ", ".join(
        f"{k[4:]} {v:.4f}" for k, v in sorted(val.items())
        if k.count("/") == 1 and k[4:].startswith(("mAP@", "nDCG@"))))

  if start == 0 or ckpt.best_step() is None:
    validate(state, start)
  t0, pending = time.time(), None
  for step in range(start, tc.steps):
    batch = parallel.global_batch(batcher.batch(step), mesh)
    state, metrics = step_fn(state, batch)
    # The previous step's loss is checked after this step is dispatched: no pipeline stall.
    if pending is not None and not np.isfinite(float(pending["loss"])):
      raise FloatingPointError(f"Non-finite loss at step {step}: {jax.device_get(pending)}")
    pending, done = metrics, step + 1
    if done % tc.log_every == 0 or done == tc.steps:
      scalars = {f"train/{k}": v for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(scalars["train/loss"]):
        raise FloatingPointError(f"Non-finite loss at step {done}: {scalars}")
      rate = (done - start) * tc.batch_size / max(time.time() - t0, 1e-9)
      scalars["train/examples_per_sec"] = rate
      writer.write_scalars(done, scalars)
      _log(f"step {done}/{tc.steps} | loss {scalars['train/loss']:.4f} | {rate:.1f} ex/s | "
           f"ETA {format_eta((tc.steps - done) * tc.batch_size / max(rate, 1e-9))}")
    # Validate before saving: a crash in between must not leave a saved, never-validated
    # step that a resumed run would skip (it could then never be selected as best).
    if done % tc.eval_every == 0 or done == tc.steps:
      validate(state, done)
    # stop_after_steps: a time-limited job slice (e.g. a SLURM allocation) saves and exits.
    stop = bool(tc.stop_after_steps) and done - start >= tc.stop_after_steps
    stop = stop and done < tc.steps
    if done % tc.checkpoint_every == 0 or done == tc.steps or stop:
      ckpt.save_last(done, state)
    if stop:
      ckpt.wait()
      _log(f"Stopping after {done - start} steps (train.stop_after_steps); rerun to resume.")
      return {"stopped_at_step": float(done)}
  train_seconds = time.time() - t0
  ckpt.wait()

  best = ckpt.best_step()
  if best is not None and best != int(state["step"]):
    state = ckpt.restore_best(checkpointing.abstract(state))
  selected = int(state["step"])
  results = {f"test/{k}": v for k, v in run_eval(state, splits, "query", "gallery").items()}
  if selected not in val_history:  # selected in an earlier (resumed) process
    val_history[selected] = {f"val/{k}": v for k, v in
                             run_eval(state, splits, "val_query", "val_gallery").items()}
  results.update(val_history[selected])
  results.update({"selected_step": float(selected), "train/steps": float(tc.steps),
                  "train/seconds": train_seconds})
  writer.write_scalars(selected, results)
  _log(f"test of the step-{selected} state (selected by {tc.best_metric}): " + ", ".join(
      f"{k[5:]} {v:.4f}" for k, v in sorted(results.items())
      if k.count("/") == 1 and k[5:].startswith(("mAP@", "nDCG@"))))
  return results
