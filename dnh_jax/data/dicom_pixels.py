"""DICOM pixels as a radiologist's viewer shows them, with a reason for every refusal.

`read_display` turns one DICOM file into a float32 [H, W] image in [0, 1] by the
standard display pipeline (DICOM PS3.4 N.2), using pydicom's own implementations:

1. decode (pydicom with the pylibjpeg plugins of requirements.txt: JPEG baseline /
   extended / lossless, JPEG-LS, JPEG 2000, RLE, deflate); YBR_FULL(_422) is converted to
   RGB by the decoder (pydicom 3's `as_rgb` default);
2. multi-frame: the middle frame, `frames // 2`, is the item (one item per file; the
   report records the frame count);
3. PALETTE COLOR: `apply_color_lut`, then luminance;
4. grayscale: `apply_modality_lut` (rescale slope / intercept: Hounsfield units for CT,
   or a Modality LUT), then `apply_voi_lut` when the file carries a VOI LUT or a window
   centre / width (the first one), mapped from its output range to [0, 1]; a file without
   either is windowed to its [0.5, 99.5] percentiles (`images.WINDOW_PERCENTILES`), and
   8-bit data without a rescale keeps its full 0..255 range;
5. MONOCHROME1 is inverted, so bright means dense everywhere;
6. RGB (and palette output): ITU-R BT.601 luminance over the full range of its bit depth.

Files that cannot be used raise `Unusable(reason, message)`; `REASONS` lists the reasons
the ingest report counts.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import numpy as np

from dnh_jax.data import pixels as pixels_lib

NOT_DICOM = "not_dicom"
NO_PIXEL_DATA = "no_pixel_data"
UNDECODABLE = "undecodable_transfer_syntax"
TRUNCATED = "truncated_pixel_data"
BAD_PIXELS = "invalid_pixel_module"
REASONS = (NOT_DICOM, NO_PIXEL_DATA, UNDECODABLE, TRUNCATED, BAD_PIXELS)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA = np.array([0.299, 0.587, 0.114])
# Recorded per file in the ingest report (no patient identifiers).
REPORT_TAGS = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription",
               "SOPClassUID", "PhotometricInterpretation", "Rows", "Columns",
               "NumberOfFrames", "BitsStored", "PixelSpacing", "ImagerPixelSpacing")


@contextlib.contextmanager
def _quiet():
  """pydicom warns (and logs) on many harmless vendor deviations; the report says what
  matters, so they are silenced while a file is read."""
  logger = logging.getLogger("pydicom")
  level = logger.level
  logger.setLevel(logging.CRITICAL)   # decoders log each failure with a traceback
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    logger.setLevel(level)


class Unusable(ValueError):
  """A file that cannot become an example; `reason` is one of REASONS."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def read_header(path: str, *, defer: bool = True):
  """(dataset, has_file_meta). Header-less files are read with `force=True`.

  With `defer`, values over 1 KiB (the pixels) are read only when accessed, so a header
  scan of a large archive reads little, and still tells whether PixelData is present.

  Raises:
    Unusable(NOT_DICOM): unreadable, or header-less without pixel data (a text file that
      pydicom's forced read turns into a few garbage elements is not an image).
  """
  import pydicom   # pylint: disable=g-import-not-at-top
  defer_size = 1024 if defer else None
  with _quiet():
    try:
      return pydicom.dcmread(path, defer_size=defer_size), True
    except pydicom.errors.InvalidDicomError:
      pass
    except Exception as e:   # pylint: disable=broad-except  (truncated headers raise many kinds)
      raise Unusable(NOT_DICOM, f"{path}: not readable DICOM: {type(e).__name__}: {e}")
    try:
      ds = pydicom.dcmread(path, force=True, defer_size=defer_size)
      has_pixels = any(k in ds for k in _PIXEL_KEYWORDS) and "Rows" in ds
      plausible = has_pixels or ("SOPClassUID" in ds and "SOPInstanceUID" in ds)
    except Exception:   # pylint: disable=broad-except
      plausible = False
  if not plausible:
    raise Unusable(NOT_DICOM, f"{path}: not DICOM (no 'DICM' file header, and a forced "
                              "read finds no DICOM object)")
  if not has_pixels:
    raise no_pixel_data(ds, path)
  return ds, False


def header_tags(ds) -> dict[str, Any]:
  """The REPORT_TAGS present in `ds`, JSON-serialisable."""
  with _quiet():
    return _header_tags(ds)


def _header_tags(ds) -> dict[str, Any]:
  out = {}
  for keyword in REPORT_TAGS:
    try:
      value = ds.get(keyword)
    except Exception:   # pylint: disable=broad-except  (a malformed value)
      continue
    if value is None or value == "":
      continue
    if keyword == "SOPClassUID":
      value = getattr(value, "name", str(value))
    elif hasattr(value, "__iter__") and not isinstance(value, str):
      value = [float(v) for v in value]
    elif isinstance(value, (int, float)):
      value = float(value) if not float(value).is_integer() else int(value)
    else:
      value = str(value)
    out[keyword] = value
  return out


def _ensure_transfer_syntax(ds) -> None:
  """Header-less files (or a meta group without (0002,0010)): infer the syntax from the
  encoding pydicom detected, which is all an uncompressed file needs."""
  from pydicom import uid   # pylint: disable=g-import-not-at-top
  from pydicom.dataset import FileMetaDataset   # pylint: disable=g-import-not-at-top
  meta = getattr(ds, "file_meta", None)
  if meta is not None and "TransferSyntaxUID" in meta:
    return
  if meta is None:
    ds.file_meta = meta = FileMetaDataset()
  implicit, little = ds.original_encoding
  meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit and little else
                            uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)


def has_pixel_data(ds) -> bool:
  return any(k in ds for k in _PIXEL_KEYWORDS)


def no_pixel_data(ds, path: str) -> Unusable:
  sop = ds.get("SOPClassUID", None)
  kind = getattr(sop, "name", None) or f"Modality {ds.get('Modality', '?')!r}"
  return Unusable(NO_PIXEL_DATA, f"{path}: no pixel data ({kind}); not an image object")


def decode(ds, path: str) -> np.ndarray:
  """Decoded pixels of the middle frame ([H, W] or [H, W, 3], native byte order)."""
  if not has_pixel_data(ds):
    raise no_pixel_data(ds, path)
  for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
    if keyword not in ds:
      raise Unusable(BAD_PIXELS, f"{path}: image pixel module lacks {keyword}")
  _ensure_transfer_syntax(ds)
  syntax = ds.file_meta.TransferSyntaxUID
  try:
    with _quiet():
      pixels = ds.pixel_array
  except Exception as e:   # pylint: disable=broad-except  (decoders raise many kinds)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "less than expected" in text or "truncated" in text.lower():
      raise Unusable(TRUNCATED, f"{path}: pixel data is truncated: {text}") from e
    if getattr(syntax, "is_compressed", False):
      raise Unusable(UNDECODABLE, f"{path}: cannot decode transfer syntax "
                                  f"{getattr(syntax, 'name', syntax)}: {text}") from e
    raise Unusable(BAD_PIXELS, f"{path}: pixel data cannot be read: "
                               f"{type(e).__name__}: {text}") from e
  pixels = np.asarray(pixels)
  frames = _frames(ds)
  if frames > 1 and pixels.shape[0] == frames:
    pixels = pixels[frames // 2]
  if pixels.dtype.byteorder == ">":
    pixels = pixels.astype(pixels.dtype.newbyteorder("="))
  return pixels


def _frames(ds) -> int:
  try:
    with _quiet():
      return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
  except (TypeError, ValueError):
    return 1


def voi_output_range(ds) -> tuple[float, float]:
  """The output range of pydicom's `apply_voi_lut` for `ds` (its windowing rule)."""
  if "VOILUTSequence" in ds:
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    return 0.0, float(2 ** bits - 1)
  if ds.get("ModalityLUTSequence"):
    lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
  elif int(ds.get("PixelRepresentation", 0)) == 0:
    lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
  else:
    lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
  slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
  if slope is not None and intercept is not None:
    lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
  return lo, hi


def _has_voi(ds) -> bool:
  return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def to_display(pixels: np.ndarray, ds) -> tuple[np.ndarray, str]:
  """Decoded pixels -> (float32 [H, W] in [0, 1], the window rule applied).

  See the module docstring for the steps; the rule is "voi", "percentile", "full_range"
  (8-bit grayscale or colour) or "palette".
  """
  from pydicom.pixels import processing   # pylint: disable=g-import-not-at-top
  photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
  bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
  if photometric == "PALETTE COLOR":
    rgb = processing.apply_color_lut(pixels, ds)
    full = 255.0 if rgb.dtype == np.uint8 else 65535.0
    return (rgb[..., :3].astype(np.float64) @ _LUMA / full).astype(np.float32), "palette"
  if pixels.ndim == 3:
    gray = pixels[..., :3].astype(np.float64) @ _LUMA
    return (gray / float(2 ** bits - 1)).clip(0, 1).astype(np.float32), "full_range"
  values = processing.apply_modality_lut(pixels, ds)
  if _has_voi(ds):
    lo, hi = voi_output_range(ds)
    out = processing.apply_voi_lut(np.asarray(values, np.float64), ds, index=0)
    unit, rule = (np.asarray(out, np.float64) - lo) / max(hi - lo, 1e-12), "voi"
  elif pixels.dtype == np.uint8 and "RescaleSlope" not in ds and not ds.get(
      "ModalityLUTSequence"):
    unit, rule = pixels.astype(np.float64) / 255.0, "full_range"
  else:
    unit, rule = pixels_lib.to_unit_range(np.asarray(values, np.float64)) / 255.0, "percentile"
  unit = np.clip(unit, 0.0, 1.0)
  if photometric == "MONOCHROME1":
    unit = 1.0 - unit
  return unit.astype(np.float32), rule


def read_display(path: str) -> tuple[np.ndarray, dict[str, Any]]:
  """One file -> (float32 [H, W] in [0, 1], info {"window", "frames", "tags", "file_meta"}).

  Raises:
    Unusable: naming the file, with one of REASONS.
  """
  ds, has_meta = read_header(path, defer=False)
  pixels = decode(ds, path)
  try:
    with _quiet():
      image, rule = to_display(pixels, ds)
  except Unusable:
    raise
  except Exception as e:   # pylint: disable=broad-except  (malformed LUTs, windows)
    raise Unusable(BAD_PIXELS, f"{path}: display pipeline failed: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from e
  if image.ndim != 2 or image.size == 0:
    raise Unusable(BAD_PIXELS, f"{path}: decoded pixels have shape {image.shape}; "
                               "expected one 2-D frame")
  return image, {"window": rule, "frames": _frames(ds), "file_meta": has_meta,
                 "tags": header_tags(ds)}


def load_example(args: tuple[str, int]):
  """Worker of the DICOM builder: (path, size) -> ("ok", uint8[size, size, 1], info) or
  ("skipped", reason, message). Module level, so worker processes can run it."""
  path, size = args
  try:
    image, info = read_display(path)
  except Unusable as e:
    return "skipped", e.reason, str(e)
  return "ok", pixels_lib.fit_to_size(image * 255.0, size), info
