"""Inspecting a trained fuzzy inference layer: rule dumps (JSON) and membership plots (PNG).

`explain_image` runs a model on one image and returns, as a JSON-ready dict, the
antecedent inputs, every membership of the strongest rules, their normalised firing
strengths and rule weights, and (optionally) the image's labels and the predicted findings.
`plot_memberships` draws the learned membership functions, one panel per input, with the
image's input values marked. The layer's parameters are found in the model's parameter
tree by their names (`find_fuzzy_params`), so the dump works wherever the layer sits.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from dnh_jax.models import fuzzy as fuzzy_lib
from dnh_jax.utils import atomic_write_bytes, atomic_write_json

find_fuzzy_params = fuzzy_lib.find_fuzzy_params


def membership_kind(fuzzy_params: Mapping[str, Any]) -> str:
  """"bell" when the subtree has bell exponents ("raw_shapes"), else "gaussian"."""
  return "bell" if "raw_shapes" in fuzzy_params else "gaussian"


def membership_parameters(fuzzy_params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Constrained (positive) membership parameters of one layer as numpy arrays.

  Returns:
    {"centres": [M, R], "widths": [M, R], "shapes": [M, R] (bell only),
     "rule_weights": [R]}.
  """
  out = {"centres": np.asarray(fuzzy_params["centres"], np.float64),
         "widths": np.asarray(fuzzy_lib.positive(fuzzy_params["raw_widths"]), np.float64),
         "rule_weights": np.exp(np.asarray(fuzzy_params["log_rule_weights"], np.float64))}
  if "raw_shapes" in fuzzy_params:
    out["shapes"] = np.asarray(fuzzy_lib.positive(fuzzy_params["raw_shapes"]), np.float64)
  return out


def membership_curves(fuzzy_params: Mapping[str, Any], z: np.ndarray) -> np.ndarray:
  """Memberships mu_mr(z) on a grid z [G] for every input m and rule r -> float[G, M, R]."""
  p = membership_parameters(fuzzy_params)
  m = p["centres"].shape[0]
  grid = jnp.broadcast_to(jnp.asarray(z, jnp.float32)[:, None], (len(z), m))
  log_mu = fuzzy_lib.MEMBERSHIPS[membership_kind(fuzzy_params)](
      grid, jnp.asarray(p["centres"], jnp.float32), jnp.asarray(p["widths"], jnp.float32),
      None if "shapes" not in p else jnp.asarray(p["shapes"], jnp.float32))
  return np.exp(np.asarray(log_mu, np.float64))


def rule_dump(fuzzy_params: Mapping[str, Any], state: Mapping[str, Any], index: int = 0, *,
              top_rules: int = 5) -> dict:
  """JSON-ready explanation of one example from a layer's params and forward state.

  Args:
    fuzzy_params: one subtree from `find_fuzzy_params`.
    state: the layer's state for a batch ("inputs" [B, M], "log_memberships" [B, M, R],
      "log_firing" [B, R], "firing" [B, R]).
    index: which example of the batch.
    top_rules: how many of the strongest rules to list.

  Returns:
    {"membership": kind, "num_inputs": M, "num_rules": R, "inputs": [M],
     "firing_entropy": entropy of the normalised firing strengths in nats (0: one rule
     decides; log R: all rules equal), "rules": [{"rule", "firing", "log_firing",
     "weight", "antecedents": [{"input", "value", "centre", "width", ["shape"],
     "membership"}]}] strongest first}.
  """
  p = membership_parameters(fuzzy_params)
  z = np.asarray(state["inputs"], np.float64)[index]
  log_mu = np.asarray(state["log_memberships"], np.float64)[index]
  firing = np.asarray(state["firing"], np.float64)[index]
  log_firing = np.asarray(state["log_firing"], np.float64)[index]
  num_inputs, num_rules = log_mu.shape
  order = np.argsort(-firing, kind="stable")[:max(1, min(top_rules, num_rules))]
  rules = []
  for r in order:
    antecedents = []
    for m in range(num_inputs):
      a = {"input": int(m), "value": float(z[m]), "centre": float(p["centres"][m, r]),
           "width": float(p["widths"][m, r]), "membership": float(np.exp(log_mu[m, r]))}
      if "shapes" in p:
        a["shape"] = float(p["shapes"][m, r])
      antecedents.append(a)
    rules.append({"rule": int(r), "firing": float(firing[r]),
                  "log_firing": float(log_firing[r]),
                  "weight": float(p["rule_weights"][r]), "antecedents": antecedents})
  positive = firing[firing > 0]
  return {"membership": membership_kind(fuzzy_params), "num_inputs": int(num_inputs),
          "num_rules": int(num_rules), "inputs": [float(v) for v in z],
          "firing_entropy": float(-np.sum(positive * np.log(positive))),
          "rules": rules}


def explain_image(model, variables: Mapping[str, Any], image: np.ndarray, *,
                  top_rules: int = 5, schema=None, labels: Mapping[str, Any] | None = None,
                  image_id: Any = None) -> dict:
  """Runs the model on one image and dumps its fuzzy rules (JSON-ready dict).

  Args:
    model: a model from `dnh_jax.models.build_model` with model.fuzzy=True.
    variables: its variables ({"params": ..., ["batch_stats": ...]}).
    image: float or uint8 [H, W, 1] (uint8 is scaled to [0, 1] like training batches).
    top_rules: how many of the strongest rules to list per layer.
    schema: optional label schema, to name labels and predicted findings.
    labels: optional stored labels of the image ({characteristic: int32[] | uint8[V]}).
    image_id: optional id recorded in the dump.

  Returns:
    {"image_id", "code" (the image's +-1 bits), "layers": {path: rule_dump(...)} (one
    per fuzzy layer, keyed by its parameter path), "labels" and "predicted" (per-label
    probabilities; with a schema)}.

  Raises:
    ValueError: the model has no fuzzy layer, or `image` is not [H, W, C].
  """
  x = np.asarray(image)
  if x.ndim != 3:
    raise ValueError(f"explain_image: expected one image [H, W, C], got shape {x.shape}")
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  outputs = fuzzy_lib.fuzzy_states(model, variables, jnp.asarray(x[None]))
  dump = {"image_id": None if image_id is None else str(image_id),
          "code": [int(b) for b in np.where(np.asarray(outputs["codes"])[0] >= 0, 1, -1)],
          "layers": {path: rule_dump(subtree(variables["params"], path), state, 0,
                                     top_rules=top_rules)
                     for path, state in outputs["fuzzy"].items()}}
  if schema is not None and labels is not None:
    dump["labels"] = {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in schema.decode(labels).items()}
  if schema is not None and isinstance(outputs.get("logits"), Mapping):
    predicted = {}
    for c in schema.characteristics:
      if c.name not in outputs["logits"]:
        continue
      logit = np.asarray(outputs["logits"][c.name], np.float64)[0]
      if c.kind == "multi":
        prob = 1.0 / (1.0 + np.exp(-logit))
        predicted[c.name] = {label: float(p) for label, p in zip(c.vocabulary, prob)}
      else:
        predicted[c.name] = c.vocabulary[int(np.argmax(logit))]
    dump["predicted"] = predicted
  return dump


def subtree(params: Mapping[str, Any], path: str) -> Mapping[str, Any]:
  """The node of a nested dict at a '/'-joined path (e.g. a fuzzy layer's parameters)."""
  node = params
  for key in path.split("/"):
    node = node[key]
  return node


def write_rule_dump(path: str, dump: Mapping[str, Any]) -> None:
  """Writes a dump from `explain_image` / `rule_dump` as JSON, atomically."""
  atomic_write_json(path, dict(dump))


def plot_memberships(fuzzy_params: Mapping[str, Any], path: str, *,
                     inputs: Sequence[float] | None = None,
                     highlight_rules: Sequence[int] = (), title: str | None = None,
                     grid_points: int = 201) -> None:
  """Plots every membership function of one layer to a PNG (matplotlib, Agg backend).

  One panel per antecedent input m, showing mu_mr(z) over z in [-1, 1] (the range of the
  tanh inputs) for all R rules; `highlight_rules` are drawn thick and labelled, and
  `inputs` (an image's z [M]) are marked by vertical lines.

  Args:
    fuzzy_params: one subtree from `find_fuzzy_params`.
    path: the PNG to write (atomically).
    inputs: optional z values of one image, float[M].
    highlight_rules: rule ids to emphasise (e.g. the strongest rules of that image).
    title: optional figure title.
    grid_points: samples of z per curve.
  """
  import matplotlib  # Imported here: only plotting needs it, and it must use Agg.
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  z = np.linspace(-1.0, 1.0, grid_points)
  curves = membership_curves(fuzzy_params, z)
  _, m, r = curves.shape
  if inputs is not None and len(inputs) != m:
    raise ValueError(f"plot_memberships: inputs has {len(inputs)} values, the layer {m}")
  cols = min(4, m)
  rows = math.ceil(m / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
  highlight = set(int(h) for h in highlight_rules)
  colours = plt.get_cmap("tab20")
  for i in range(rows * cols):
    ax = axes[i // cols][i % cols]
    if i >= m:
      ax.axis("off")
      continue
    for rule in range(r):
      strong = rule in highlight
      ax.plot(z, curves[:, i, rule], color=colours(rule % 20), lw=2.2 if strong else 0.7,
              alpha=1.0 if strong or not highlight else 0.45,
              label=f"rule {rule}" if strong else None)
    if inputs is not None:
      ax.axvline(float(inputs[i]), color="black", ls="--", lw=1.0)
    ax.set_title(f"input {i}", fontsize=9)
    ax.set_xlim(-1, 1)
    ax.set_ylim(0, 1.05)
    ax.tick_params(labelsize=7)
    if highlight and i == 0:
      ax.legend(fontsize=6, loc="upper right")
  fig.suptitle(title or f"{membership_kind(fuzzy_params)} memberships, {r} rules", fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  atomic_write_bytes(path, buf.getvalue())


def plot_image_memberships(dump: Mapping[str, Any], variables: Mapping[str, Any],
                           path: str) -> None:
  """Membership plot of the first fuzzy layer in an `explain_image` dump, marking the
  image's inputs and highlighting its strongest rules."""
  layer_path, layer = next(iter(dump["layers"].items()))
  params = subtree(variables["params"], layer_path)
  plot_memberships(params, path, inputs=layer["inputs"],
                   highlight_rules=[rule["rule"] for rule in layer["rules"]],
                   title=f"image {dump.get('image_id')}: memberships, strongest rules bold")



def rule_label_association(firing: np.ndarray, labels: np.ndarray,
                           vocabulary: Sequence[str], *, top: int = 3) -> list[dict]:
  """Which labels each rule fires for, over a set of images.

  lift_rl = mean firing of rule r over the images carrying label l / mean firing of r over
  all images: above 1 the rule fires more for that label than on average.

  Args:
    firing: float[N, R] normalised firing strengths.
    labels: multi-hot [N, V].
    vocabulary: the V label names.
    top: how many labels to list per rule.

  Returns:
    One dict per rule: {"rule", "mean_firing", "lift": {label: lift} for the `top`
    labels of highest lift (labels no image carries are skipped)}.
  """
  firing = np.asarray(firing, np.float64)
  labels = np.asarray(labels) != 0
  overall = firing.mean(axis=0)
  counts = labels.sum(axis=0)
  per_label = (firing.T @ labels) / np.maximum(counts, 1)[None, :]   # [R, V]
  lift = per_label / np.maximum(overall[:, None], 1e-12)
  out = []
  for r in range(firing.shape[1]):
    order = [v for v in np.argsort(-lift[r], kind="stable") if counts[v] > 0][:top]
    out.append({"rule": int(r), "mean_firing": float(overall[r]),
                "lift": {vocabulary[v]: float(lift[r, v]) for v in order}})
  return out


def _split_firing(model, variables, images: np.ndarray,
                  batch: int = 256) -> dict[str, np.ndarray]:
  """Normalised firing strengths [N, R] of every fuzzy layer over uint8 images [N, H, W, 1]."""
  out: dict[str, list] = {}
  batch = max(1, min(batch, len(images)))  # a small split needs no padding to `batch`
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    n = len(chunk)
    if n < batch:  # pad to one compiled shape
      chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
    states = fuzzy_lib.fuzzy_states(model, variables,
                                    jnp.asarray(chunk, jnp.float32) / 255.0)["fuzzy"]
    for path, state in states.items():
      out.setdefault(path, []).append(np.asarray(state["firing"])[:n])
  return {path: np.concatenate(parts) for path, parts in out.items()}


def explain_workdir(workdir: str, *, findings: Sequence[str], split: str = "query",
                    top_rules: int = 5, out_dir: str | None = None) -> dict:
  """Rule dump and membership plot for one image of a trained run's split.

  Restores the best checkpoint of `workdir` (its config.json says how to rebuild the
  model and data), picks the first image of `split` whose label set equals `findings`
  (else the first that contains them), and writes `<out_dir>/rule_dump.json` and
  `<out_dir>/memberships.png`. The dump's rules carry the labels they are associated with
  over the whole split (`rule_label_association`).

  Args:
    workdir: a finished run of a model with model.fuzzy=True.
    findings: label names the image must carry (multi-label characteristic).
    split: which split to search ("query", "gallery", ...).
    top_rules: rules listed in the dump.
    out_dir: where to write (default `<workdir>/fuzzy`).

  Returns:
    The dump (as written).
  """
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dnh_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from dnh_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from dnh_jax import models as models_lib  # pylint: disable=g-import-not-at-top

  with open(f"{workdir}/config.json") as f:
    config = ml_collections.ConfigDict(json.load(f))
  splits = data_lib.load_splits(config.data, seed=config.seed,
                                data_dir=data_lib.default_data_dir(config.data))
  schema = splits.schema
  multi = [c for c in schema.characteristics if c.kind == "multi"]
  if not multi:
    raise ValueError(f"explain_workdir: {workdir} has no multi-label characteristic")
  char = multi[0]
  wanted = char.encode(list(findings)).astype(bool)
  data = splits.data[split]
  have = np.asarray(data.labels[char.name]) != 0
  exact = np.flatnonzero((have == wanted).all(axis=1))
  superset = np.flatnonzero((have >= wanted).all(axis=1))
  if not len(exact) and not len(superset):
    raise ValueError(f"explain_workdir: no {split} image carries {list(findings)}")
  index = int(exact[0] if len(exact) else superset[0])

  step, variables = checkpointing.restore_best_variables(workdir)
  model = models_lib.build_model(config.model, schema)

  labels = {k: v[index] for k, v in data.labels.items()}
  dump = explain_image(model, variables, data.images[index], top_rules=top_rules,
                       schema=schema, labels=labels, image_id=int(data.ids[index]))
  dump.update({"workdir": os.path.abspath(workdir), "checkpoint_step": step,
               "split": split, "index_in_split": index})
  for path, firing in _split_firing(model, variables, data.images).items():
    assoc = rule_label_association(firing, have, char.vocabulary)
    for rule in dump["layers"][path]["rules"]:
      rule["associated_labels"] = assoc[rule["rule"]]["lift"]
      rule["mean_firing_over_split"] = assoc[rule["rule"]]["mean_firing"]
  out_dir = out_dir or os.path.join(workdir, "fuzzy")
  write_rule_dump(os.path.join(out_dir, "rule_dump.json"), dump)
  plot_image_memberships(dump, variables, os.path.join(out_dir, "memberships.png"))
  return dump


def main(argv: Sequence[str]) -> None:
  """python -m dnh_jax.report.fuzzy_report --workdir=W --findings=effusion,edema"""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  dump = explain_workdir(f.workdir, findings=[x for x in f.findings.split(",") if x],
                         split=f.split, top_rules=f.top_rules, out_dir=f.out_dir)
  print(f"Wrote {f.out_dir or os.path.join(f.workdir, 'fuzzy')}/rule_dump.json and "
        f"memberships.png for image {dump['image_id']}")


def define_flags() -> None:
  """The command line's absl flags (defined only when run as a program: importing this
  module must not claim --workdir, which the trainer's entry point defines)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "a finished run with model.fuzzy=True", required=True)
  flags.DEFINE_string("findings", None, "comma-separated label names", required=True)
  flags.DEFINE_string("split", "query", "split to search for the image")
  flags.DEFINE_integer("top_rules", 5, "rules listed in the dump")
  flags.DEFINE_string("out_dir", None, "output folder (default <workdir>/fuzzy)")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
