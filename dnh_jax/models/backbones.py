"""Image backbones (trunks): single-channel images in, one feature vector per image out.

Every backbone is a Flax linen module called as ``backbone(images, train) -> features``
with ``images`` float[B, H, W, C] (C = 1 here) and ``features`` float[B, F] in the compute
dtype. They accept 28..224 px inputs: the stem (first convolution and pooling) is chosen
from the static input size so that small images are not pooled away, following the usual
CIFAR-style adaptation of ImageNet networks.

Padding is explicit and symmetric (like torchvision) rather than "SAME", so a PyTorch
twin of each network in the benchmarks has exactly the same shapes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnh_jax.models import fast_layers

Dtype = Any


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str | None = None,
          use_bias: bool = True, lowering: str = "auto",
          pad: int | None = None) -> fast_layers.Conv:
  # fast_layers.Conv has nn.Conv's parameters and auto-names; it is faster on XLA:CPU.
  # Padding defaults to kernel // 2 on each side.
  return fast_layers.Conv(features, kernel, strides=stride,
                          padding=kernel // 2 if pad is None else pad, use_bias=use_bias,
                          dtype=dtype, param_dtype=jnp.float32, name=name,
                          lowering=lowering)


def _max_pool(x: jnp.ndarray, window: int, stride: int, pad: int = 0) -> jnp.ndarray:
  # nn.max_pool's values and gradient without XLA:CPU's slow select-and-scatter.
  return fast_layers.max_pool(x, window, stride, pad)


def mixstyle(key: jax.Array, x: jnp.ndarray, p: float, alpha: float = 0.1,
             eps: float = 1e-6) -> jnp.ndarray:
  """MixStyle: mixes each example's feature statistics with another example's.

  With probability p (one draw per batch), every example's per-channel mean mu and std
  sigma (over H, W; no gradient) are replaced by lam * (mu, sigma) + (1 - lam) * those of a
  random other example of the batch, lam ~ Beta(alpha, alpha) per example:
  x -> sigma_mix * (x - mu) / sigma + mu_mix. Early-layer statistics carry "style" (the
  domain: here, much of the modality); mixing them makes a network rely on content.

  Args:
    key: PRNG key.
    x: float[B, H, W, C] feature maps.
    p: probability of mixing this batch.
    alpha: Beta parameter.
    eps: variance floor.

  Returns:
    float[B, H, W, C].

  References:
    Zhou, Yang, Qiao and Xiang, "Domain generalization with MixStyle", ICLR 2021.
  """
  k_apply, k_lam, k_perm = jax.random.split(key, 3)
  mu = jax.lax.stop_gradient(x.mean(axis=(1, 2), keepdims=True))
  sigma = jax.lax.stop_gradient(jnp.sqrt(x.var(axis=(1, 2), keepdims=True) + eps))
  lam = jax.random.beta(k_lam, alpha, alpha, (x.shape[0], 1, 1, 1)).astype(x.dtype)
  perm = jax.random.permutation(k_perm, x.shape[0])
  mu_mix = lam * mu + (1 - lam) * mu[perm]
  sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
  mixed = (x - mu) / sigma * sigma_mix + mu_mix
  return jnp.where(jax.random.uniform(k_apply) < p, mixed, x)


def _check_images(name: str, images: jnp.ndarray):
  if images.ndim != 4:
    raise ValueError(f"{name}: expected images of shape [B, H, W, C], got {images.shape}")
  if min(images.shape[1:3]) < 16:
    raise ValueError(f"{name}: images of {images.shape[1]}x{images.shape[2]} px are too small "
                     "(at least 16 px per side)")


class SmallCNN(nn.Module):
  """A fast plain CNN for quick runs and tests.

  Stride-2 3x3 convolutions halve the image until it is at most 8x8 (at least three of
  them: 64 px -> 32 -> 16 -> 8, 28 px -> 14 -> 7 -> 4), then the map is flattened (keeping
  the spatial layout, which carries organ position in medical images) into a dense layer.

  Attributes:
    widths: channels of the first convolutions; later ones repeat the last width.
    features: width F of the output feature vector.
    mixstyle_p: > 0: `mixstyle` after each of the first `mixstyle_layers` convolutions
      in training, with this probability (needs a "mixstyle" rng); 0: off.
    mixstyle_layers: how many early layers mix.
    pool: "flatten" (keeps the layout) or "mean" (global average: a bag of local
      features whose receptive field is about 15 px, blind to where they are).
    dtype: compute dtype (parameters stay float32).
  """

  widths: Sequence[int] = (24, 48, 96)
  features: int = 256
  mixstyle_p: float = 0.0
  mixstyle_layers: int = 2
  pool: str = "flatten"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    # No batch statistics or dropout: identical in both modes unless MixStyle is on.
    _check_images("small_cnn", images)
    mix = train and self.mixstyle_p > 0 and self.has_rng("mixstyle")
    size = max(images.shape[1:3])
    layers = max(len(self.widths), math.ceil(math.log2(size / 8)))
    x = images.astype(self.dtype)
    for i in range(layers):
      width = self.widths[min(i, len(self.widths) - 1)]
      # XLA's own convolution: none of these hits XLA:CPU's slow cases, and it keeps the
      # small CNN's numbers (every recorded objective run uses it) bit for bit.
      x = nn.relu(_conv(width, 3, 2, self.dtype, name=f"conv{i}", lowering="xla")(x))
      if mix and i < self.mixstyle_layers:
        x = mixstyle(self.make_rng("mixstyle"), x, self.mixstyle_p)
    x = x.mean(axis=(1, 2)) if self.pool == "mean" else x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(self.features, dtype=self.dtype, name="fc")(x))


class AlexNet(nn.Module):
  """The AlexNet-style network of the published work (Krizhevsky et al., 2012).

  Five convolutions (64, 192, 384, 256, 256 channels) with three max-pools, then two
  dropout + dense(4096) + ReLU layers (fc6, fc7); the features are the fc7 activations.
  The stem follows the input size so the last map is never empty:

    ==========  =======================  ====================
    input side  conv1                    last map (5 -> pool)
    ==========  =======================  ====================
    >= 128      11x11, stride 4, pad 2   224 px: 6x6
    48 .. 127   5x5, stride 2, pad 2     64 px: 3x3
    < 48        3x3, stride 1, pad 1     28 px: 2x2
    ==========  =======================  ====================

  Pools are 3x3 stride 2 without padding (torchvision's layout).

  Attributes:
    fc_width: width of fc6 and fc7 (F).
    dropout: dropout rate before fc6 and fc7 (needs a "dropout" rng when training).
    dtype: compute dtype.
  """

  fc_width: int = 4096
  dropout: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    _check_images("alexnet", images)
    size = min(images.shape[1:3])
    kernel, stride = (11, 4) if size >= 128 else (5, 2) if size >= 48 else (3, 1)
    # torchvision's padding 2 for the ImageNet stem (224 px -> 55 -> pool 27), so that its
    # weights load (dnh_jax.models.pretrained); the small stems keep kernel // 2.
    pad = 2 if size >= 128 else kernel // 2
    x = images.astype(self.dtype)
    x = nn.relu(_conv(64, kernel, stride, self.dtype, name="conv1", pad=pad)(x))
    x = _max_pool(x, 3, 2)
    x = nn.relu(_conv(192, 5, 1, self.dtype, name="conv2")(x))
    x = _max_pool(x, 3, 2)
    x = nn.relu(_conv(384, 3, 1, self.dtype, name="conv3")(x))
    x = nn.relu(_conv(256, 3, 1, self.dtype, name="conv4")(x))
    x = nn.relu(_conv(256, 3, 1, self.dtype, name="conv5")(x))
    x = _max_pool(x, 3, 2)
    x = x.reshape(x.shape[0], -1)
    for name in ("fc6", "fc7"):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.fc_width, dtype=self.dtype, name=name)(x))
    return x


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convolutions with a residual connection."""

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, norm: Callable[..., nn.Module]) -> jnp.ndarray:
    residual = x
    y = _conv(self.features, 3, self.stride, self.dtype, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = _conv(self.features, 3, 1, self.dtype, use_bias=False)(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al. 2017).
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = _conv(self.features, 1, self.stride, self.dtype, name="proj",
                       use_bias=False)(residual)
      residual = norm(name="proj_norm")(residual)
    return nn.relu(residual + y)


class Bottleneck(nn.Module):
  """ResNet bottleneck block: 1x1 -> 3x3 (strided) -> 1x1 x4 channels, residual."""

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, norm: Callable[..., nn.Module]) -> jnp.ndarray:
    residual = x
    y = _conv(self.features, 1, 1, self.dtype, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = _conv(self.features, 3, self.stride, self.dtype, use_bias=False)(y)
    y = nn.relu(norm()(y))
    y = _conv(self.features * 4, 1, 1, self.dtype, use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = _conv(self.features * 4, 1, self.stride, self.dtype, name="proj",
                       use_bias=False)(residual)
      residual = norm(name="proj_norm")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet v1.5 (He et al., 2016) with BatchNorm ('batch_stats' collection).

  The stem follows the input size: >= 128 px the ImageNet stem (7x7 stride-2 convolution
  and 3x3 stride-2 max-pool, /4); 48..127 px a 3x3 stride-2 convolution and the same pool
  (/4: 64 px -> stages at 16, 8, 4, 2; a /2 stem would cost ~4x more, ~215 GFLOP per
  ResNet-18 training step at batch 64, too slow for CPU runs); < 48 px the CIFAR stem
  (3x3 convolution, no pool: 28 px -> stages at 28, 14, 7, 4). Features are the globally
  averaged last stage (512 for ResNet-18, 2048 for ResNet-50).

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: BasicBlock or Bottleneck.
    width: channels of the first stage (doubled at each later stage).
    dtype: compute dtype (batch statistics and parameters stay float32).
  """

  stage_sizes: Sequence[int]
  block: type[nn.Module]
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    _check_images("resnet", images)
    norm = lambda **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=1e-5, dtype=self.dtype, **kw)
    size = min(images.shape[1:3])
    x = images.astype(self.dtype)
    if size >= 128:
      x = _conv(self.width, 7, 2, self.dtype, name="stem", use_bias=False)(x)
      x = nn.relu(norm(name="stem_norm")(x))
      x = _max_pool(x, 3, 2, pad=1)
    elif size >= 48:
      x = _conv(self.width, 3, 2, self.dtype, name="stem", use_bias=False)(x)
      x = nn.relu(norm(name="stem_norm")(x))
      x = _max_pool(x, 3, 2, pad=1)
    else:
      x = _conv(self.width, 3, 1, self.dtype, name="stem", use_bias=False)(x)
      x = nn.relu(norm(name="stem_norm")(x))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, stride, self.dtype, name=f"stage{i}_block{j}")(
            x, norm)
    return jnp.mean(x, axis=(1, 2))


def resnet18(dtype: Dtype = jnp.float32, name: str | None = None) -> ResNet:
  """ResNet-18: basic blocks (2, 2, 2, 2), 512 features."""
  return ResNet((2, 2, 2, 2), BasicBlock, dtype=dtype, name=name)


def resnet50(dtype: Dtype = jnp.float32, name: str | None = None) -> ResNet:
  """ResNet-50: bottleneck blocks (3, 4, 6, 3), 2048 features."""
  return ResNet((3, 4, 6, 3), Bottleneck, dtype=dtype, name=name)


def small_cnn(dtype: Dtype = jnp.float32, name: str | None = None,
              mixstyle_p: float = 0.0) -> SmallCNN:
  """SmallCNN with its defaults (256 features); `mixstyle_p` > 0 turns MixStyle on."""
  return SmallCNN(mixstyle_p=mixstyle_p, dtype=dtype, name=name)


def small_cnn_gap(dtype: Dtype = jnp.float32, name: str | None = None,
                  mixstyle_p: float = 0.0) -> SmallCNN:
  """SmallCNN with global average pooling: local texture, not layout (objective 4's
  modality network)."""
  return SmallCNN(mixstyle_p=mixstyle_p, pool="mean", dtype=dtype, name=name)


def alexnet(dtype: Dtype = jnp.float32, name: str | None = None) -> AlexNet:
  """AlexNet-style network with its defaults (4096 features)."""
  return AlexNet(dtype=dtype, name=name)


# model.backbone -> constructor(dtype=..., name=...) returning a fresh (unbound) module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "small_cnn_gap": small_cnn_gap,
    "alexnet": alexnet,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def get_backbone(name: str, dtype: Dtype = jnp.float32,
                 module_name: str | None = "backbone", mixstyle_p: float = 0.0) -> nn.Module:
  """A fresh backbone module; raises a ValueError listing valid names on a typo, or when
  MixStyle (`model.mixstyle` > 0) is asked of a backbone without it (small_cnn has it)."""
  if name not in BACKBONES:
    raise ValueError(f"model.backbone={name!r} is not valid; choose one of {sorted(BACKBONES)}")
  if mixstyle_p > 0:
    if name not in ("small_cnn", "small_cnn_gap"):
      raise ValueError(f"model.mixstyle={mixstyle_p} needs model.backbone='small_cnn'; "
                       f"{name!r} has no MixStyle layers")
    return BACKBONES[name](dtype=dtype, name=module_name, mixstyle_p=mixstyle_p)
  return BACKBONES[name](dtype=dtype, name=module_name)
