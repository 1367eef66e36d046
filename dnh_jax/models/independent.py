"""Independent sub-networks: one backbone + hash layer + classifier per characteristic.

Objective 4 of RESEARCH.md: a combination of characteristics never seen in training
(breast MRI, when training held breast ultrasound and brain MRI) can only land next to its
true combination if each sub-code depends on nothing but its own characteristic. A shared
trunk (the structured head) lets the sub-codes co-adapt to the training combinations; here
the networks share no parameter at all, and each is trained only on its characteristic's
labels (`dnh_jax.losses.independent`).

The C networks run inside one program: when every characteristic uses the same backbone,
the backbones' parameters (and batch statistics) are stacked on a leading axis of size C
and the backbone is mapped over it with `nn.vmap`, so one jitted train step updates all
of them with batched convolutions instead of C sequential programs. Backbones of different
kinds fall back to C separate modules. The hash layers and classifiers are small dense
layers, one per characteristic (their widths differ), each reading only its own network's
features.

Parameter layout (stacked case)::

    params["backbones"][...]           leading axis C (schema order)
    params["hash_<name>"]["dense"]     one per characteristic
    params["classifier_<name>"]        one per characteristic (model.classifier)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from dnh_jax.data.schema import Schema
from dnh_jax.models import backbones as backbones_lib
from dnh_jax.models import heads

Dtype = Any


class _Backbone(nn.Module):
  """One backbone; `train` is an attribute so `nn.vmap` maps over the images only."""

  name_of_backbone: str
  train: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    net = backbones_lib.get_backbone(self.name_of_backbone, self.dtype, module_name="net")
    return net(images, self.train).astype(jnp.float32)


@functools.lru_cache(maxsize=None)
def _stacked_backbones(count: int) -> type[nn.Module]:
  """`count` copies of `_Backbone`, parameters and batch statistics stacked on axis 0.

  The same images go to every copy (in_axes=None, so the axis size must be given) and each
  copy gets its own initialisation and dropout keys.
  """
  return nn.vmap(_Backbone, variable_axes={"params": 0, "batch_stats": 0},
                 split_rngs={"params": True, "dropout": True},
                 in_axes=None, out_axes=0, axis_size=count)


class IndependentHashingNetwork(nn.Module):
  """C independent networks (backbone -> hash layer, + classifier), codes concatenated.

  Attributes:
    backbones: backbone name per characteristic (schema order); all equal -> stacked.
    segments: sub-code length per characteristic (schema order).
    class_sizes: (characteristic name, vocabulary size) per characteristic (schema order).
    classifier: add a classifier per network on its own features (outputs["logits"]).
    pre_hash: optional pre-hash module factory, one instance per network.
    dtype: compute dtype (parameters stay float32).
  """

  backbones: Sequence[str]
  segments: Sequence[int]
  class_sizes: Sequence[tuple[str, int]]
  classifier: bool = True
  pre_hash: heads.PreHashFactory | None = None
  dtype: Dtype = jnp.float32

  @property
  def stacked(self) -> bool:
    """Whether the backbones are one vmapped module with stacked parameters."""
    return len(set(self.backbones)) == 1

  def _features(self, images: jnp.ndarray, train: bool) -> list[jnp.ndarray]:
    n = len(self.class_sizes)
    if self.stacked:
      stacked = _stacked_backbones(n)(self.backbones[0], train, self.dtype,
                                      name="backbones")(images)  # [C, B, F]
      return [stacked[i] for i in range(n)]
    return [_Backbone(b, train, self.dtype, name=f"backbone_{name}")(images)
            for b, (name, _) in zip(self.backbones, self.class_sizes)]

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
  given = tuple(model_cfg.get("backbones", ()) or ())
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
  from dnh_jax.models import build  # pylint: disable=g-import-not-at-top  (build imports us)
  if model_cfg.get("code_classifier", ""):
    raise ValueError("model.code_classifier is not supported by model.head='independent': "
                     "a classifier on the whole code would share gradients across the "
                     "sub-networks; set model.code_classifier=''")
  return IndependentHashingNetwork(
      backbones=backbone_names(model_cfg, schema),
      segments=build.segments(model_cfg, schema),
      class_sizes=tuple((c.name, c.size) for c in schema.characteristics),
      classifier=bool(model_cfg.classifier),
      pre_hash=build.pre_hash_factory(model_cfg),
      dtype=build.compute_dtype(model_cfg))
