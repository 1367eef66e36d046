"""Reading and normalising arbitrary medical images to uint8[size, size, 1].

Real sources come in every shape: 8-bit PNG/JPEG photographs of films, 16-bit PNG
radiographs, int16 CT slices in Hounsfield units, uint16 MR, RGB ultrasound screen grabs,
multi-frame DICOM. Every builder funnels them through `normalize_image`, so a dataset is
always 1 channel, uint8 0..255, square and of the configured size:

1. channels: RGB(A) -> luminance (ITU-R BT.601 weights), alpha dropped;
2. intensity: uint8 and bool are kept as they are; every other dtype (int16 CT, uint16,
   float) is windowed per image to its [0.5, 99.5] percentiles, so one hot pixel does
   not crush the contrast, then mapped to 0..255;
3. geometry: padded to a square with black (centred, so the aspect ratio is kept), then
   resized with PIL's antialiased bilinear filter.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# The pixel rules live in `pixels` (also read by `dicom_pixels`, which this module calls).
from dnh_jax.data.pixels import (WINDOW_PERCENTILES, fit_to_size,  # noqa: F401
                                 normalize_image, pad_to_square, resize, to_grayscale,
                                 to_unit_range)

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NUMPY_EXTENSIONS = (".npy",)
IMAGE_EXTENSIONS = PIL_EXTENSIONS + NUMPY_EXTENSIONS + DICOM_EXTENSIONS


def read_dicom(path: str) -> np.ndarray:
  """A DICOM file as displayed: float32 [H, W] in [0, 255] (`dicom_pixels.read_display`:
  modality LUT, VOI window, palette, MONOCHROME1, middle frame).

  Raises:
    ValueError (`dicom_pixels.Unusable`): naming the file and why it cannot be used.
  """
  from dnh_jax.data import dicom_pixels   # pylint: disable=g-import-not-at-top
  return dicom_pixels.read_display(path)[0] * np.float32(255.0)


def read_image(path: str) -> np.ndarray:
  """Reads the raw pixels of a PNG/JPEG/BMP/TIFF, .npy or DICOM file.

  Returns:
    The stored pixels ([H, W] or [H, W, C]) in their own dtype; 16-bit PNGs stay uint16.

  Raises:
    ValueError: naming the file, for an unsupported extension or unreadable content.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext in DICOM_EXTENSIONS:
    return read_dicom(path)
  if ext in NUMPY_EXTENSIONS:
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise ValueError(f"{path} is not a readable .npy array: {e}") from e
  if ext in PIL_EXTENSIONS:
    try:
      with Image.open(path) as img:
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
          img = img.convert("RGB")
        return np.array(img)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise ValueError(f"{path} is not a readable image: {e}") from e
  raise ValueError(f"{path}: unsupported image extension {ext!r}; expected one of "
                   f"{list(IMAGE_EXTENSIONS)}")


def load_image(path: str, size: int) -> np.ndarray:
  """`read_image` then `normalize_image`: uint8[size, size, 1].

  DICOM files are already windowed for display, so they are only fitted to size."""
  if os.path.splitext(path)[1].lower() in DICOM_EXTENSIONS:
    return fit_to_size(read_dicom(path), size)
  return normalize_image(read_image(path), size, source=path)
