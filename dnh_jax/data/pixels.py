"""Pixel normalisation: any 2-D/3-D pixel array -> uint8[size, size, 1] (no file reading).

The rules (channels, intensity window, geometry) are listed in `dnh_jax.data.images`,
which reads files and funnels them through `normalize_image`; the DICOM display pipeline
(`dicom_pixels`) uses the same window and resize, so it imports this module, not that one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

# Percentiles of the per-image intensity window for non-uint8 images.
WINDOW_PERCENTILES = (0.5, 99.5)


def _describe(source: str) -> str:
  return f" ({source})" if source else ""


def to_grayscale(pixels: np.ndarray, *, source: str = "") -> np.ndarray:
  """Collapses the channel axis.

  Args:
    pixels: [H, W], [H, W, C] (C in 1..4) or channels-first [C, H, W] (C in 1, 3, 4).
    source: file name used in error messages.

  Returns:
    [H, W] float64 for colour input (luminance), otherwise the input dtype.

  Raises:
    ValueError: naming `source` and the shape, for anything that is not a 2-D image.
  """
  pixels = np.asarray(pixels)
  if pixels.ndim == 3 and pixels.shape[-1] not in (1, 2, 3, 4) and pixels.shape[0] in (1, 3, 4):
    pixels = np.moveaxis(pixels, 0, -1)   # channels-first, as numpy dumps from torch are
  if pixels.ndim == 2:
    return pixels
  if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(
        f"Image{_describe(source)} has shape {pixels.shape}; expected [H, W], [H, W, C] "
        "or [C, H, W] with C in 1..4 (one 2-D image, not a volume)")
  channels = pixels.shape[-1]
  if channels <= 2:                         # gray or gray + alpha
    return pixels[..., 0]
  rgb = pixels[..., :3].astype(np.float64)
  return rgb @ np.array([0.299, 0.587, 0.114])


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
  """Maps a 2-D image of any dtype to float32 in [0, 255] (see the module docstring).

  Args:
    pixels: [H, W] of any real dtype; bool and uint8 are kept as they are.

  Returns:
    float32[H, W] in [0, 255]; a constant image becomes all zeros.
  """
  if pixels.dtype == np.bool_:
    return pixels.astype(np.float32) * 255.0
  if pixels.dtype == np.uint8:
    return pixels.astype(np.float32)
  values = pixels.astype(np.float64)
  finite = np.isfinite(values)
  if not finite.any():
    return np.zeros(values.shape, np.float32)
  lo, hi = np.percentile(values[finite], WINDOW_PERCENTILES)
  if hi <= lo:                              # nearly constant: fall back to the full range
    lo, hi = values[finite].min(), values[finite].max()
  if hi <= lo:
    return np.zeros(values.shape, np.float32)
  values = np.where(finite, values, lo)
  return (np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.float32)


def pad_to_square(image: np.ndarray) -> np.ndarray:
  """Centres a [H, W] image on a black square canvas of side max(H, W)."""
  h, w = image.shape
  side = max(h, w)
  top, left = (side - h) // 2, (side - w) // 2
  return np.pad(image, ((top, side - h - top), (left, side - w - left)))


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes a float32 [S, S] image to [size, size] (antialiased bilinear)."""
  if image.shape == (size, size):
    return image
  pil = Image.fromarray(np.ascontiguousarray(image, np.float32))   # mode "F"
  return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), np.float32)


def normalize_image(pixels: Any, size: int, *, source: str = "") -> np.ndarray:
  """Any 2-D image -> uint8[size, size, 1] (see the module docstring).

  Args:
    pixels: array-like [H, W], [H, W, C] or [C, H, W]; any real dtype.
    size: output side in pixels.
    source: file name used in error messages.

  Returns:
    uint8[size, size, 1].
  """
  if size < 1:
    raise ValueError(f"image size must be positive, got {size}")
  pixels = np.asarray(pixels)
  if pixels.dtype.kind not in "biuf":
    raise ValueError(f"Image{_describe(source)} has dtype {pixels.dtype}; expected a real "
                     "number or bool array")
  if pixels.size == 0:
    raise ValueError(f"Image{_describe(source)} is empty (shape {pixels.shape})")
  gray = to_grayscale(pixels, source=source)
  if gray.dtype == np.float64 and pixels.dtype == np.uint8:
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)   # luminance of 8-bit RGB
  return fit_to_size(to_unit_range(gray), size)


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
  """A displayable float [H, W] in [0, 255] -> uint8[size, size, 1] (pad, resize, round)."""
  image = resize(pad_to_square(np.asarray(image, np.float32)), size)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None]
