"""A trained model, loaded from its workdir for retrieval: encode images, search an index.

    retriever = Retriever.from_workdir("workdirs/untrained_combo-quick")    # best checkpoint
    images = retriever.load_images(["q.png"])        # read + converted as training data were
    codes = retriever.encode(images)                 # float32[N, K]
    index = GalleryIndex.load("gallery.dnhidx", expect_fingerprints=retriever.fingerprints)
    hits = retriever.search(images, "modality>organ>disease", k=10, index=index)

`from_workdir` reads `config.json` back into the config the run was trained with
(`config_lib.load_config_file`), the label schema from `split_manifest.json`, builds the
model with `models.build_model(config.model, schema)` and restores from the Orbax
checkpoint only what inference needs: the model parameters and batch statistics (no
optimizer state, no loss, no dataset). The model is called exactly as the trainer's
evaluation calls it, `model.apply(variables, images_to_float(images), train=False)`.

Images must be what the training data were: uint8[N, S, S, 1] with S = config.data.image_size.
`load_images` / `prepare` produce that from files or raw arrays of any size, depth and
channel count with `dnh_jax.data.images.normalize_image`, the conversion every dataset
builder applies; `encode` refuses anything else instead of guessing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dnh_jax import config_lib
from dnh_jax import models as models_lib
from dnh_jax.data import batching
from dnh_jax.data import images as images_lib
from dnh_jax.data.schema import MULTI, Schema
from dnh_jax.retrieval import search as search_lib
from dnh_jax.retrieval.index import GalleryIndex, fingerprint
from dnh_jax.retrieval.preferences import Preference

CHECKPOINT_KINDS = ("best", "last")


class CheckpointError(ValueError):
  """A workdir whose checkpoint cannot serve the model of its config.json."""


def _paths_and_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): (tuple(v.shape), str(np.dtype(v.dtype))) for k, v in flat}


def _steps(directory: str) -> list[int]:
  """Committed Orbax steps of a manager folder (temporary, unfinished saves excluded)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d, "default")))


def find_checkpoint(workdir: str, checkpoint: str | int = "best") -> tuple[str, int]:
  """(path of the checkpoint item, its step) for "best", "last" or a step number.

  Raises:
    CheckpointError: naming the workdir and what it holds, when there is no such checkpoint.
  """
  root = os.path.join(workdir, "checkpoints")
  best, last = _steps(os.path.join(root, "best")), _steps(os.path.join(root, "last"))
  if not best and not last:
    raise CheckpointError(f"{workdir}: no checkpoint in {root}/best or {root}/last; expected "
                          "the workdir of a training run (python -m dnh_jax.main ...)")
  if isinstance(checkpoint, str) and checkpoint.isdigit():
    checkpoint = int(checkpoint)
  if checkpoint == "best":
    kind, step = ("best", best[-1]) if best else ("last", last[-1])
  elif checkpoint == "last":
    kind, step = ("last", last[-1]) if last else ("best", best[-1])
  elif isinstance(checkpoint, int) and not isinstance(checkpoint, bool):
    if checkpoint in last:
      kind, step = "last", checkpoint
    elif checkpoint in best:
      kind, step = "best", checkpoint
    else:
      raise CheckpointError(f"{workdir}: no checkpoint of step {checkpoint}; it holds steps "
                            f"{sorted(set(best + last))}")
  else:
    raise CheckpointError(f"checkpoint={checkpoint!r}; expected one of "
                          f"{list(CHECKPOINT_KINDS)} or a step number")
  return os.path.join(root, kind, str(step), "default"), step


def restore_variables(path: str, abstract_variables: dict, *, what: str) -> dict:
  """Restores only {"params", "batch_stats"} of a saved train state at `path`.

  The saved tree ({"step", "params": {"model", "loss"}, "batch_stats", "opt_state"}) is
  checked against the model's own shapes first, so a checkpoint of another model fails
  with the first differing parameters instead of an Orbax traceback.
  """
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # the item folder has no step metadata: a warning
  try:
    meta = ocp.StandardCheckpointer().metadata(path)
  except Exception as e:  # pylint: disable=broad-except  (Orbax raises many kinds)
    raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
  finally:
    absl_logger.setLevel(level)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  try:
    saved = {"params": tree["params"]["model"], "batch_stats": tree.get("batch_stats") or {}}
  except (KeyError, TypeError):
    raise CheckpointError(f"{path}: not a dnh_jax train state (no params/model)") from None
  want = {"params": abstract_variables["params"],
          "batch_stats": abstract_variables.get("batch_stats", {})}
  have_s, want_s = _paths_and_shapes(saved), _paths_and_shapes(want)
  if have_s != want_s:
    diff = sorted(set(have_s.items()) ^ set(want_s.items()))[:3]
    raise CheckpointError(
        f"{path}: checkpoint of another model than {what} ({len(have_s)} arrays saved, "
        f"{len(want_s)} expected; first differences {diff})")
  target = {"params": {"model": want["params"]}, "batch_stats": want["batch_stats"]}
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(dtype=x.dtype, sharding=device),
                              target)
  restored = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                        partial_restore=True))
  variables = {"params": restored["params"]["model"]}
  if jax.tree.leaves(restored["batch_stats"]):
    variables["batch_stats"] = restored["batch_stats"]
  return variables


def load_schema(workdir: str) -> Schema:
  """The label schema recorded in `<workdir>/split_manifest.json`."""
  path = os.path.join(workdir, "split_manifest.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path} does not exist; expected the split manifest a training "
                          "run writes (it records the label schema)")
  with open(path, encoding="utf-8") as f:
    return Schema.from_json(json.dumps(json.load(f)["schema"]))


@dataclasses.dataclass
class Retriever:
  """A trained hashing model ready for retrieval (see module doc).

  Attributes:
    config: the config the model was trained with.
    schema: its label schema.
    model: the Flax module (`models.build_model`).
    variables: {"params", ["batch_stats"]} of the restored checkpoint.
    segments: sub-code lengths, () for a flat code.
    step: the restored training step.
    workdir: where it came from ("" when built directly).
  """

  config: ml_collections.ConfigDict
  schema: Schema
  model: Any
  variables: dict
  segments: tuple[int, ...]
  step: int = 0
  workdir: str = ""
  batch_size: int = 256

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str | int = "best") -> "Retriever":
    """Loads the model of a training run's workdir.

    Args:
      workdir: the `--workdir` of `python -m dnh_jax.main`.
      checkpoint: "best" (selected on validation), "last", or a step number.

    Raises:
      FileNotFoundError / CheckpointError: no config.json, manifest or checkpoint, or a
        checkpoint of another model; the message names the file.
    """
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
      raise FileNotFoundError(f"workdir {workdir} does not exist")
    config = config_lib.load_config_file(os.path.join(workdir, "config.json"))
    schema = load_schema(workdir)
    model = models_lib.build_model(config.model, schema)
    segments = (() if config.model.head == "flat"
                else tuple(models_lib.segments(config.model, schema)))
    size = int(config.data.image_size)
    sample = jnp.zeros((2, size, size, 1), jnp.float32)
    key = jax.random.key(0)
    abstract = jax.eval_shape(
        lambda: model.init({"params": key, "dropout": key}, sample, train=False))
    path, step = find_checkpoint(workdir, checkpoint)
    what = (f"{workdir}/config.json (model.head={config.model.head}, "
            f"backbone={config.model.backbone}, bits={config.model.bits})")
    variables = restore_variables(path, dict(abstract), what=what)
    return cls(config=config, schema=schema, model=model, variables=variables,
               segments=segments, step=step, workdir=workdir,
               batch_size=int(config.eval.get("batch_size", 256)))

  # ------------------------------------------------------------------- identity

  @property
  def image_shape(self) -> tuple[int, int, int]:
    size = int(self.config.data.image_size)
    return (size, size, 1)

  @functools.cached_property
  def fingerprints(self) -> dict[str, str]:
    """{"model": hash of the restored variables, "config": hash of the config}."""
    return {"model": fingerprint(jax.tree.map(np.asarray, self.variables)),
            "config": fingerprint(json.loads(self.config.to_json_best_effort()))}

  # ------------------------------------------------------------------- images

  def check_images(self, images) -> np.ndarray:
    """Validates model-ready images: uint8[N, S, S, 1] (or [N, S, S]) as training saw."""
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    s = self.image_shape
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != s:
      raise ValueError(
          f"images are {images.dtype}{list(images.shape)}; the model was trained on "
          f"uint8[N, {s[0]}, {s[1]}, 1] (config.data.image_size={s[0]}, one channel): "
          "convert them with Retriever.prepare / load_images, which resize and convert "
          "as the training data were (dnh_jax.data.images.normalize_image)")
    return images

  def prepare(self, raw_images: Sequence[np.ndarray], sources: Sequence[str] = ()):
    """Raw 2-D images of any size, dtype and channel count -> uint8[N, S, S, 1]."""
    size = self.image_shape[0]
    sources = list(sources) or [""] * len(raw_images)
    out = [images_lib.normalize_image(x, size, source=src)
           for x, src in zip(raw_images, sources)]
    return np.stack(out) if out else np.zeros((0, *self.image_shape), np.uint8)

  def load_images(self, paths: Sequence[str]) -> np.ndarray:
    """Reads PNG/JPEG/TIFF/NPY/DICOM files -> uint8[N, S, S, 1] (ValueError naming a file)."""
    size = self.image_shape[0]
    out = [images_lib.load_image(p, size) for p in paths]
    return np.stack(out) if out else np.zeros((0, *self.image_shape), np.uint8)

  # ------------------------------------------------------------------- inference

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False))

  def outputs(self, images) -> dict:
    """Model outputs (numpy) of uint8 images [N, S, S, 1], in padded fixed-size batches."""
    images = self.check_images(images)
    n = len(images)
    # Batches of `batch_size`; fewer images are padded to the next power of two only, so a
    # single query costs one small batch and at most log2(batch_size) shapes compile.
    b = min(self.batch_size, 1 << max(n - 1, 0).bit_length())
    parts = []
    for start in range(0, max(n, 1), b):
      chunk = images[start:start + b]
      m = len(chunk)
      if m < b:  # one compiled shape for every batch
        chunk = np.concatenate([chunk, np.zeros((b - m, *chunk.shape[1:]), np.uint8)])
      out = self._apply(self.variables, batching.images_to_float(chunk))
      parts.append(jax.tree.map(lambda x, m=m: np.asarray(x)[:m], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  def encode(self, images) -> np.ndarray:
    """Real codes float32[N, K] of uint8 images [N, S, S, 1]."""
    return self.outputs(images)["codes"].astype(np.float32)

  def encode_with_labels(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(codes float32[N, K], labels predicted by the model's classifiers {name: int32[N]});
    the labels are {} for a model without classifiers; multi-label ones are skipped."""
    out = self.outputs(images)
    logits = out.get("logits") or {}
    labels = {c.name: np.argmax(logits[c.name], -1).astype(np.int32)
              for c in self.schema.characteristics if c.name in logits and c.kind != MULTI}
    return out["codes"].astype(np.float32), labels

  # ------------------------------------------------------------------- search

  def preference(self, spec: str) -> Preference:
    return search_lib.index_preference(spec, self.schema.names, self.segments)

  def search(self, images, preference: str, k: int, *, index: GalleryIndex):
    """Top-k items of `index` for each image under a preference.

    Returns:
      `search.SearchResults` (positions, ids, weighted and per-sub-code distances).
    """
    if index.fingerprints.get("model") not in (None, self.fingerprints["model"]):
      raise ValueError("index was built by another model than this retriever's "
                       f"({self.workdir})")
    return search_lib.search(index, self.encode(images), preference, k)
