"""Binary codes: sign, pack into uint32 words, unpack.

Layout (a public contract: indexes and tests rely on it): bit j of a K-bit code is bit
position j % 32 (least significant first) of word j // 32; a code takes ceil(K / 32) words
and the unused high bits of the last word are 0. Because unused bits are 0 in every code,
XOR + popcount over whole words is exactly the Hamming distance over the K real bits.

Both functions take numpy or jax arrays and return the same kind, so they serve the
jitted evaluation path and the numpy metric references alike.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

WORD_BITS = 32


def num_words(num_bits: int) -> int:
  """Number of uint32 words holding a `num_bits`-bit code."""
  if num_bits < 1:
    raise ValueError(f"num_bits must be >= 1, got {num_bits}")
  return -(-num_bits // WORD_BITS)


def _xp(x):
  return jnp if isinstance(x, jax.Array) else np


def pack_codes(codes) -> np.ndarray | jax.Array:
  """Packs codes into uint32 words.

  Args:
    codes: [..., K] float or integer codes (bit = code >= 0, so sign(0) = +1 and never a
      zero bit) or bool codes (bit = value).

  Returns:
    uint32[..., ceil(K / 32)], bit j in word j // 32 at position j % 32 (LSB first),
    unused high bits 0. A jax array for a jax input, else numpy.
  """
  xp = _xp(codes)
  codes = xp.asarray(codes)
  if codes.ndim < 1 or codes.shape[-1] < 1:
    raise ValueError(f"pack_codes: expected codes of shape [..., K] with K >= 1, "
                     f"got shape {codes.shape}")
  if codes.dtype == xp.bool_:
    bits = codes
  elif xp.issubdtype(codes.dtype, xp.number):
    bits = codes >= 0
  else:
    raise ValueError(f"pack_codes: expected numeric or bool codes, got {codes.dtype}")
  k = codes.shape[-1]
  w = num_words(k)
  pad = w * WORD_BITS - k
  bits = bits.astype(xp.uint32)
  if pad:
    bits = xp.concatenate([bits, xp.zeros(bits.shape[:-1] + (pad,), xp.uint32)], axis=-1)
  bits = bits.reshape(bits.shape[:-1] + (w, WORD_BITS))
  shifts = xp.arange(WORD_BITS, dtype=xp.uint32)
  # Distinct bit positions: the sum is a bitwise OR and cannot carry.
  return xp.sum(bits << shifts, axis=-1, dtype=xp.uint32)


def unpack_codes(packed, num_bits: int) -> np.ndarray | jax.Array:
  """Inverse of `pack_codes`.

  Args:
    packed: uint32[..., W] packed codes.
    num_bits: K, the code length; ceil(K / 32) must equal W.

  Returns:
    int8[..., K] of -1 / +1.
  """
  xp = _xp(packed)
  packed = xp.asarray(packed)
  if packed.dtype != xp.uint32:
    raise ValueError(f"unpack_codes: expected uint32 packed codes, got {packed.dtype}")
  if packed.ndim < 1 or packed.shape[-1] != num_words(num_bits):
    raise ValueError(f"unpack_codes: {num_bits} bits need {num_words(num_bits)} words, "
                     f"got packed shape {packed.shape}")
  shifts = xp.arange(WORD_BITS, dtype=xp.uint32)
  bits = (packed[..., None] >> shifts) & xp.uint32(1)
  bits = bits.reshape(packed.shape[:-1] + (packed.shape[-1] * WORD_BITS,))[..., :num_bits]
  return (bits.astype(xp.int8) * 2 - 1).astype(xp.int8)


def sign_codes(codes) -> np.ndarray | jax.Array:
  """Real codes -> int8 codes in {-1, +1} with sign(0) = +1, shape kept."""
  xp = _xp(codes)
  codes = xp.asarray(codes)
  return xp.where(codes >= 0, 1, -1).astype(xp.int8)


def as_packed(codes, num_bits: int | None = None) -> tuple[np.ndarray | jax.Array, int]:
  """Accepts real [N, K] codes or packed uint32 [N, W] codes; returns (packed, K).

  Packed input carries no K: `num_bits` is used when given (checked against W), else
  K = 32 * W, which gives the same distances because unused bits are 0.
  """
  xp = _xp(codes)
  codes = xp.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"expected codes of shape [N, K] or packed [N, W], got {codes.shape}")
  if codes.dtype == xp.uint32:
    if num_bits is None:
      num_bits = codes.shape[-1] * WORD_BITS
    elif num_words(num_bits) != codes.shape[-1]:
      raise ValueError(f"packed codes have {codes.shape[-1]} words but num_bits="
                       f"{num_bits} needs {num_words(num_bits)}")
    return codes, num_bits
  if num_bits is not None and num_bits != codes.shape[-1]:
    raise ValueError(f"codes have {codes.shape[-1]} bits but num_bits={num_bits}")
  return pack_codes(codes), codes.shape[-1]
