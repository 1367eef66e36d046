"""Independent sub-networks: one backbone + hash layer + classifier per characteristic.

Objective 4 (configs/untrained_combo.py): a combination of characteristics never seen in
training (breast MRI, when training held breast ultrasound and brain MRI) should land next to its
true combination if each sub-code depends on nothing but its own characteristic. A shared
trunk (the structured head) lets the sub-codes co-adapt to the training combinations; here
the networks share no parameter at all, and each is trained only on its characteristic's
labels (`dnh_jax.losses.structured`). Independent parameters do not stop a network from
using a cue that is confounded with its characteristic in the training data (an organ
network may read the modality's texture when each modality came with one organ):
configs/untrained_combo.py measures how far the sub-codes transfer.

The C networks run inside one program: when every characteristic uses the same backbone,
the backbones' parameters (and batch statistics) are stacked on a leading axis of size C
and one jitted train step updates all of them. The stack is computed either with
`jax.vmap` over the stacked axis (batched, grouped convolutions: the choice for GPUs and
TPUs) or unrolled over static slices of it (XLA:CPU runs grouped convolutions several
times slower than C plain ones); `model.stack_compute` picks, "auto" by backend. Backbones
of different kinds (`model.backbones`) fall back to C separate modules. The hash layers
and classifiers are small dense layers, one per characteristic (their widths differ),
each reading only its own network's features.

Parameter layout (stacked case)::

    params["backbones"]["stacked"][...]   backbone tree, leading axis C (schema order)
    params["hash_<name>"]["dense"]        one per characteristic
    params["classifier_<name>"]           one per characteristic (model.classifier)
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dnh_jax.data.schema import Schema
from dnh_jax.models import backbones as backbones_lib
from dnh_jax.models import heads
from dnh_jax.models import settings
from dnh_jax.models import views as views_lib

Dtype = Any


# How a stack of identical backbones is computed; the parameter layout is the same.
#   "vmap":     jax.vmap over the stacked axis: one batched (grouped) convolution per layer;
#   "unrolled": a Python loop over static slices of the stack: C ordinary convolutions;
#   "auto":     "unrolled" on the CPU backend, "vmap" elsewhere.
# Measured with bench/independent_stack.py (one train step, batch 64, C = 3): on 2 CPU
# cores vmap was 5.5x slower than unrolled (small CNN, 32 px; XLA:CPU's grouped
# convolutions are slow); on an H200, vmap was 1.2-1.75x faster for ResNet-18 (32 and
# 64 px; three ResNet-18s at 64 px took 7.4 ms, one took 7.3 ms) and 1.2-1.35x slower for
# the small CNN, whose steps take about 1 ms either way.
STACK_COMPUTE = ("auto", "vmap", "unrolled")


class StackedBackbones(nn.Module):
  """`count` copies of one backbone, parameters and batch statistics stacked on axis 0.

  Each copy has its own initialisation (split keys) and dropout key, and sees the same
  images. Variables: params["stacked"] and (BatchNorm backbones) batch_stats["stacked"],
  each a backbone variable tree with a leading axis of size `count`.

  Attributes:
    backbone: name in `dnh_jax.models.backbones.BACKBONES`.
    count: C, the number of copies.
    compute: one of STACK_COMPUTE.
    mixstyle: MixStyle probability of the backbone's early layers (0: off).
    dtype: compute dtype.
  """

  backbone: str
  count: int
  compute: str = "auto"
  mixstyle: float = 0.0
  dtype: Dtype = jnp.float32

  def _compute(self) -> str:
    if self.compute not in STACK_COMPUTE:
      raise ValueError(f"model.stack_compute={self.compute!r}; choose one of "
                       f"{list(STACK_COMPUTE)}")
    if self.compute == "auto":
      return "unrolled" if jax.default_backend() == "cpu" else "vmap"
    return self.compute

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Args: images float32[B, H, W, 1] (every copy sees them) or float32[C, B, H, W, 1]
    (copy i sees images[i]: per-network views). Returns features float32[C, B, F]."""
    net = backbones_lib.get_backbone(self.backbone, self.dtype, module_name=None,
                                     mixstyle_p=self.mixstyle)
    per_copy = images.ndim == 5
    sample = images[0] if per_copy else images
    cache = {}

    def initial(key):  # one init per copy; cached so params and stats share it
      if "v" not in cache:
        keys = jax.random.split(key, self.count)
        cache["v"] = jax.vmap(lambda k: net.init({"params": k}, sample, train=False))(keys)
      return cache["v"]

    params = self.param("stacked", lambda key: initial(key)["params"])
    shapes = jax.eval_shape(lambda: net.init({"params": jax.random.key(0)}, sample[:1]))
    stats = None
    if "batch_stats" in shapes:
      stats = self.variable("batch_stats", "stacked",
                            lambda: initial(self.make_rng("params"))["batch_stats"])
    # One key per copy for each training rng stream the backbone may use.
    streams = [r for r in ("dropout", "mixstyle") if train and self.has_rng(r)]
    keys = ({r: jax.random.split(self.make_rng(r), self.count) for r in streams}
            if streams else None)

    def one(p, s, key, x):
      variables = {"params": p} if s is None else {"params": p, "batch_stats": s}
      rngs = {} if key is None else dict(key)
      if train and s is not None:
        out, updates = net.apply(variables, x, True, rngs=rngs, mutable=["batch_stats"])
        return out.astype(jnp.float32), updates["batch_stats"]
      return net.apply(variables, x, train, rngs=rngs).astype(jnp.float32), s

    s_in = None if stats is None else stats.value
    if self._compute() == "vmap":
      features, new_stats = jax.vmap(one, in_axes=(0, 0, 0, 0 if per_copy else None))(
          params, s_in, keys, images)
    else:
      take = lambda tree, i: jax.tree.map(lambda a: a[i], tree)
      outs = [one(take(params, i), take(s_in, i), take(keys, i),
                  images[i] if per_copy else images)
              for i in range(self.count)]
      features = jnp.stack([f for f, _ in outs])
      new_stats = None if stats is None else jax.tree.map(
          lambda *a: jnp.stack(a), *[s for _, s in outs])
    if stats is not None and train and not self.is_initializing():
      stats.value = new_stats
    return features


class IndependentHashingNetwork(nn.Module):
  """C independent networks (backbone -> hash layer, + classifier), codes concatenated.

  Attributes:
    backbones: backbone name per characteristic (schema order); all equal -> stacked.
    segments: sub-code length per characteristic (schema order).
    class_sizes: (characteristic name, vocabulary size) per characteristic (schema order).
    classifier: add a classifier per network on its own features (outputs["logits"]).
    pre_hash: optional pre-hash module factory, one instance per network.
    stack_compute: how stacked backbones are computed (STACK_COMPUTE).
    views: one name of `dnh_jax.models.views.VIEWS` per network (schema order), or ()
      for the identity: in training each network sees its own random view of the batch
      (PRNG stream "views"; without it, the inference views), at inference the view's
      deterministic test view (`views.py` says which and why).
    view_patch: tile side of the `patches` view, in pixels.
    mixstyle: MixStyle probability in each backbone's early layers (training, PRNG
      stream "mixstyle"); 0: off.
    dtype: compute dtype (parameters stay float32).
  """

  backbones: Sequence[str]
  segments: Sequence[int]
  class_sizes: Sequence[tuple[str, int]]
  classifier: bool = True
  pre_hash: heads.PreHashFactory | None = None
  stack_compute: str = "auto"
  views: Sequence[str] = ()
  view_patch: int = 8
  mixstyle: float = 0.0
  dtype: Dtype = jnp.float32

  @property
  def stacked(self) -> bool:
    """Whether the backbones are one module with stacked parameters."""
    return len(set(self.backbones)) == 1

  def _views(self, images: jnp.ndarray, train: bool) -> jnp.ndarray | None:
    """float32[C, B, H, W, 1] per-network views, or None when every view is the identity."""
    names = views_lib.check_views(self.views, len(self.class_sizes))
    if all(v == "identity" for v in names):
      return None
    key = self.make_rng("views") if train and self.has_rng("views") else None
    return views_lib.apply_views(names, images, key=key, patch=self.view_patch)

  def _features(self, images: jnp.ndarray, train: bool) -> list[jnp.ndarray]:
    n = len(self.class_sizes)
    viewed = self._views(images, train)
    if self.stacked:
      stacked = StackedBackbones(self.backbones[0], n, self.stack_compute, self.mixstyle,
                                 self.dtype, name="backbones")(
                                     images if viewed is None else viewed, train)  # [C, B, F]
      return [stacked[i] for i in range(n)]
    return [backbones_lib.get_backbone(b, self.dtype, module_name=f"backbone_{name}",
                                       mixstyle_p=self.mixstyle)(
        images if viewed is None else viewed[i], train).astype(jnp.float32)
            for i, (b, (name, _)) in enumerate(zip(self.backbones, self.class_sizes))]

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
    """Encodes images.

    Args:
      images: float32[B, H, W, 1].
      train: training mode (dropout, batch statistics).

    Returns:
      {"codes": float32[B, K] (tanh, sub-codes concatenated in schema order),
       "code_preactivations": float32[B, K], "subcodes": {name: float32[B, K_c]},
       "features": float32[B, C * F] (each network's features, concatenated),
       "logits": {name: float32[B, V_c]} (when `classifier`)}.
    """
    n = len(self.class_sizes)
    if len(self.backbones) != n or len(self.segments) != n:
      raise ValueError(f"IndependentHashingNetwork: {len(self.backbones)} backbones and "
                       f"{len(self.segments)} segments for {n} characteristics "
                       f"{[c for c, _ in self.class_sizes]}")
    features = self._features(images, train)
    subcodes, preacts, logits = {}, [], {}
    for (name, size), bits, feats in zip(self.class_sizes, self.segments, features):
      subcodes[name], z = heads.HashLayer(bits, self.pre_hash, self.dtype,
                                          name=f"hash_{name}")(feats, train)
      preacts.append(z)
      if self.classifier:
        logits[name] = nn.Dense(size, dtype=self.dtype, name=f"classifier_{name}")(
            feats).astype(jnp.float32)
    out = {"codes": jnp.concatenate([subcodes[name] for name, _ in self.class_sizes], -1),
           "code_preactivations": jnp.concatenate(preacts, axis=-1),
           "subcodes": subcodes,
           "features": jnp.concatenate(features, axis=-1)}
    if self.classifier:
      out["logits"] = logits
    return out


def backbone_names(model_cfg: ml_collections.ConfigDict, schema: Schema) -> tuple[str, ...]:
  """Backbone per characteristic: `model.backbones` if given, else `model.backbone` each."""
  given = tuple(model_cfg.backbones or ())
  if not given:
    return (model_cfg.backbone,) * len(schema.names)
  if len(given) != len(schema.names):
    raise ValueError(f"model.backbones={given} must name one backbone per characteristic "
                     f"{list(schema.names)}")
  for b in given:
    if b not in backbones_lib.BACKBONES:
      raise ValueError(f"model.backbones entry {b!r} is not valid; choose from "
                       f"{sorted(backbones_lib.BACKBONES)}")
  return given


def build_independent(model_cfg: ml_collections.ConfigDict, schema: Schema) -> nn.Module:
  """HEADS["independent"]: the config's model section -> IndependentHashingNetwork.

  Uses `model.bits` / `model.segments` (split like the structured head), `model.backbone`
  (or `model.backbones`, one per characteristic), `model.classifier` and `model.dtype`.
  """
  if model_cfg.code_classifier:
    raise ValueError("model.code_classifier is not supported by model.head='independent': "
                     "a classifier on the whole code would share gradients across the "
                     "sub-networks; set model.code_classifier=''")
  stack_compute = model_cfg.stack_compute
  if stack_compute not in STACK_COMPUTE:
    raise ValueError(f"model.stack_compute={stack_compute!r} is not valid; choose one of "
                     f"{list(STACK_COMPUTE)}")
  return IndependentHashingNetwork(
      backbones=backbone_names(model_cfg, schema),
      segments=settings.segments(model_cfg, schema),
      class_sizes=tuple((c.name, c.size) for c in schema.characteristics),
      classifier=bool(model_cfg.classifier),
      pre_hash=settings.pre_hash_factory(model_cfg),
      stack_compute=stack_compute,
      views=views_lib.check_views(model_cfg.views, len(schema.names)),
      view_patch=int(model_cfg.view_patch),
      mixstyle=float(model_cfg.mixstyle),
      dtype=settings.compute_dtype(model_cfg))
