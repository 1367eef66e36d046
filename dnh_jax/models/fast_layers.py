"""Convolution and max-pool layers lowered for speed on XLA:CPU, numerically the same.

XLA:CPU runs most convolutions through Eigen, which is fast for large feature maps but
very slow for some of the small ones of a ResNet at 64 px (batch 64, measured on 2 cores):

  * a 3x3 stride-1 convolution of a 2x2x512 map takes ~1.8 s forward and ~1.8 s for the
    input gradient, where the same arithmetic as one matrix product takes ~25 ms;
  * the input gradient of the 3x3 stride-2 convolution 4x4x256 -> 2x2x512 takes ~0.46 s;
  * the kernel gradient of a 1x1 (projection) convolution is 3-6x slower than a matmul;
  * the gradient of a 3x3 stride-2 max-pool (select-and-scatter) takes ~0.2 s on a
    32x32x64 map, 6x more than a gradient built from elementwise selections.

`Conv` is a drop-in for `flax.linen.Conv` (square kernel, symmetric padding) with the
same parameters ("kernel" [k, k, C_in, F], "bias" [F]), the same initialisers and the
same auto-name prefix, so parameter trees and checkpoints do not change. It lowers to
patches + one `lax.dot_general` (im2col) where that is faster - 1x1 kernels and outputs
of at most 4x4 pixels - and to `lax.conv_general_dilated` elsewhere. `max_pool` matches
`flax.linen.max_pool` with explicit padding, gradient included: the whole gradient of a
window goes to its first maximum in row-major order, as with select-and-scatter.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

# Outputs with at most this many pixels (4x4) use the patch lowering for k > 1; larger
# maps are faster through Eigen (e.g. 8x8x128 3x3: ~2x faster forward and kernel gradient).
PATCH_MAX_OUTPUT_PIXELS = 16

LOWERINGS = ("auto", "patches", "xla")


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def _shifted_views(x: jnp.ndarray, kernel: int, stride: int, pad: int,
                   pad_value: float) -> list[jnp.ndarray]:
  """The kernel*kernel strided views of padded `x`, row-major over the window.

  Args:
    x: [B, H, W, C].
    kernel, stride, pad: square window, stride and symmetric padding.
    pad_value: value of the padding (0 for convolutions, -inf for max-pools).

  Returns:
    kernel**2 arrays [B, H_out, W_out, C]; view (i, j) holds x_pad[:, i + s*y, j + s*x].
  """
  b, h, w, c = x.shape
  ho, wo = _out_size(h, kernel, stride, pad), _out_size(w, kernel, stride, pad)
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
  return [lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                    (1, stride, stride, 1))
          for i in range(kernel) for j in range(kernel)]


def conv_patches(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, pad: int) -> jnp.ndarray:
  """Convolution as patch extraction + one matrix product (cross-correlation, like XLA).

  Args:
    x: [B, H, W, C_in].
    kernel: [k, k, C_in, F] (HWIO).
    stride, pad: stride and symmetric zero padding of both spatial axes.

  Returns:
    [B, H_out, W_out, F], H_out = (H + 2 pad - k) // stride + 1 (likewise W_out).
  """
  k = kernel.shape[0]
  views = _shifted_views(x, k, stride, pad, 0.0)
  # Channels fastest, then window column, then row: the row-major order of an HWIO kernel.
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  return lax.dot_general(patches, kernel.reshape(-1, kernel.shape[-1]),
                         (((3,), (0,)), ((), ())))


def conv_xla(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, pad: int) -> jnp.ndarray:
  """The same convolution as `conv_patches` through `lax.conv_general_dilated`."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def use_patches(out_h: int, out_w: int, kernel: int) -> bool:
  """Whether the patch lowering is the faster one for this convolution on XLA:CPU."""
  return kernel == 1 or out_h * out_w <= PATCH_MAX_OUTPUT_PIXELS


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` with a square kernel and symmetric explicit padding.

  Same parameters, initialisers, dtype promotion and auto-name prefix ("Conv_<n>") as
  `nn.Conv(features, (k, k), strides=(s, s), padding=((p, p), (p, p)))`.

  Attributes:
    features: output channels F.
    kernel_size: k (an int: the kernel is k x k).
    strides: s for both spatial axes.
    padding: p, zeros on each side of both spatial axes.
    use_bias: whether to add a learnt bias.
    dtype: compute dtype (None: promoted from the inputs and parameters, as nn.Conv).
    param_dtype: parameter dtype.
    kernel_init, bias_init: initialisers (nn.Conv's defaults).
    lowering: "auto" (the faster of the two on XLA:CPU, see `use_patches`), "patches"
      or "xla"; the last two exist for tests and benchmarks.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., jnp.ndarray] = nn.linear.default_kernel_init
  bias_init: Callable[..., jnp.ndarray] = nn.initializers.zeros_init()
  lowering: str = "auto"

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    """[B, H, W, C_in] -> [B, H_out, W_out, F]."""
    if self.lowering not in LOWERINGS:
      raise ValueError(f"Conv.lowering={self.lowering!r} is not valid; choose one of "
                       f"{list(LOWERINGS)}")
    if inputs.ndim != 4:
      raise ValueError(f"Conv: expected inputs of shape [B, H, W, C], got {inputs.shape}")
    k, s, p = self.kernel_size, self.strides, self.padding
    kernel = self.param("kernel", self.kernel_init, (k, k, inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    out_h = _out_size(inputs.shape[1], k, s, p)
    out_w = _out_size(inputs.shape[2], k, s, p)
    if min(out_h, out_w) < 1:
      raise ValueError(f"Conv: a {inputs.shape[1]}x{inputs.shape[2]} map is too small for a "
                       f"{k}x{k} kernel with padding {p}")
    patches = (use_patches(out_h, out_w, k) if self.lowering == "auto"
               else self.lowering == "patches")
    y = (conv_patches if patches else conv_xla)(inputs, kernel, s, p)
    if bias is not None:
      y = y + bias
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x: jnp.ndarray, window: int, stride: int, pad: int) -> jnp.ndarray:
  views = _shifted_views(x, window, stride, pad, -jnp.inf)
  out = views[0]
  for v in views[1:]:
    out = jnp.maximum(out, v)
  return out


def _max_pool_fwd(x, window, stride, pad):
  out = _max_pool(x, window, stride, pad)
  return out, (x, out)


def _max_pool_bwd(window, stride, pad, res, g):
  x, out = res
  views, transpose = jax.vjp(lambda x: _shifted_views(x, window, stride, pad, -jnp.inf), x)
  # The first maximum of each window (row-major) takes the whole gradient: the same choice
  # as select-and-scatter with a >= selector, also on ties (e.g. zeros after a ReLU).
  taken = jnp.zeros(out.shape, bool)
  cotangents = []
  for v in views:
    first = (v == out) & ~taken
    taken = taken | first
    cotangents.append(jnp.where(first, g, jnp.zeros_like(g)))
  return transpose(cotangents)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jnp.ndarray, window: int, stride: int, pad: int = 0) -> jnp.ndarray:
  """Max-pool equal to `nn.max_pool(x, (w, w), (s, s), ((p, p), (p, p)))`, faster gradient.

  Args:
    x: [B, H, W, C], floating point.
    window, stride, pad: square window, stride and symmetric padding (-inf).

  Returns:
    [B, H_out, W_out, C], H_out = (H + 2 pad - window) // stride + 1 (likewise W_out).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool: expected [B, H, W, C], got {x.shape}")
  if pad >= window:
    raise ValueError(f"max_pool: padding {pad} must be smaller than the window {window}")
  return _max_pool(x, window, stride, pad)
