"""DICOM ingestion of real files: every file pydicom ships, pixels checked against pydicom.

The folder is pydicom's own `data/test_files` as installed - not a hand-picked subset -
built once per module as the README's `dicom` dataset.
"""

import collections
import json
import os

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import processing

from dnh_jax import config_lib
from dnh_jax.data import dicom_pixels
from dnh_jax.data import images as images_lib
from dnh_jax.data import ingest_report
from dnh_jax.data.builders import base
from dnh_jax.data.builders import dicom_dir
from dnh_jax.data.builders import get_builder

TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
SIZE = 32
# Maps every tag value found in test_files, so that only pixel problems are skipped.
FULL_MAP = {"modality": {"OT": "XR", "NM": "CT", "RTDOSE": "CT", "SEG": "CT", "": "XR"},
            "organ": {"CSPINE": "chest", "WHOLE BODY": "chest"},
            "default_organ": "chest"}
LABEL_REASONS = (dicom_dir.UNMAPPED_MODALITY, dicom_dir.UNMAPPED_ORGAN,
                 dicom_dir.UNMAPPED_DISEASE, dicom_dir.EXCLUDED)


def data_cfg(root, label_map="", **overrides):
  cfg = config_lib.base_config().data
  cfg.name, cfg.manual_dir, cfg.image_size, cfg.label_map = "dicom", str(root), SIZE, label_map
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def build(cfg, data_dir):
  builder = base.prepare(get_builder(cfg, str(data_dir)))
  report = ingest_report.read(ingest_report.report_path(builder.data_path))
  return builder, base.read_arrays(builder), report


def image_of(arrays, report, rel):
  entry = next(f for f in report["files"] if f["path"] == rel)
  assert entry["status"] == "ingested", entry
  return arrays["image"][entry["id"], ..., 0]


@pytest.fixture(scope="module")
def pydicom_build(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ingest")
  mapping = tmp / "map.json"
  mapping.write_text(json.dumps(FULL_MAP))
  return build(data_cfg(TEST_FILES, str(mapping)), tmp / "tfds")


def all_files(root):
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    out += [os.path.relpath(os.path.join(dirpath, n), root) for n in filenames
            if not n.startswith(".")]
  return sorted(out)


def pydicom_decodes(path):
  try:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.size > 0
  except Exception:   # pylint: disable=broad-except
    return False


# ------------------------------------------------------------------ the whole folder

def test_every_shipped_file_is_ingested_or_skipped_with_a_reason(pydicom_build):
  builder, arrays, report = pydicom_build
  files = {f["path"]: f for f in report["files"]}
  assert sorted(files) == all_files(TEST_FILES)          # one entry per file found
  summary = report["summary"]
  assert summary["files_found"] == len(files) == summary["ingested"] + summary["skipped"]
  assert summary["ingested"] == len(arrays["id"]) == builder.info.splits[base.SPLIT].num_examples
  reasons = collections.Counter(f["reason"] for f in files.values() if f["reason"])
  assert dict(reasons) == summary["skipped_by_reason"]
  for f in files.values():
    assert f["status"] in ("ingested", "skipped")
    if f["status"] == "skipped":
      assert f["reason"] in dicom_pixels.REASONS + LABEL_REASONS and f["message"], f
  # Every label is mapped, so files are skipped for what they hold, never their tags.
  assert not set(reasons) & set(LABEL_REASONS)
  expected = {"MR_truncated.dcm": dicom_pixels.TRUNCATED,
              "rtplan.dcm": dicom_pixels.NO_PIXEL_DATA, "test-SR.dcm": dicom_pixels.NO_PIXEL_DATA,
              "waveform_ecg.dcm": dicom_pixels.NO_PIXEL_DATA,
              "dicomdirtests/DICOMDIR": dicom_pixels.NO_PIXEL_DATA,
              "ExplVR_LitEndNoMeta.dcm": dicom_pixels.NO_PIXEL_DATA,   # header-less RTPLAN
              "README.txt": dicom_pixels.NOT_DICOM, "zipMR.gz": dicom_pixels.NOT_DICOM,
              "crayons.icc": dicom_pixels.NOT_DICOM}
  for rel, reason in expected.items():
    assert files[rel]["reason"] == reason, files[rel]
  # Whatever pydicom itself decodes is ingested (files without an extension included).
  for rel, f in files.items():
    if pydicom_decodes(os.path.join(TEST_FILES, rel)):
      assert f["status"] == "ingested", f
  assert files["CT_small.dcm"]["tags"]["PixelSpacing"] == [0.661468, 0.661468]   # recorded
  assert arrays["image"].dtype == np.uint8 and arrays["image"].shape[1:] == (SIZE, SIZE, 1)


@pytest.mark.parametrize("rel, syntax", [
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless"),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless, Non-Hierarchical, First-Order Prediction"),
    ("JPEGLSNearLossless_16.dcm", "JPEG-LS Lossy"), ("JPGExtended.dcm", "JPEG Extended"),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline"), ("JPEG2000.dcm", "JPEG 2000"),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
    ("MR_small_RLE.dcm", "RLE Lossless"), ("image_dfl.dcm", "Deflated"),
])
def test_compressed_syntaxes_decode(pydicom_build, rel, syntax):
  _, arrays, report = pydicom_build
  ds = pydicom.dcmread(os.path.join(TEST_FILES, rel), stop_before_pixels=True)
  assert ds.file_meta.TransferSyntaxUID.name.startswith(syntax)
  image = image_of(arrays, report, rel)
  assert image.max() > image.min()


def test_lossless_syntaxes_store_the_same_image(pydicom_build):
  _, arrays, report = pydicom_build
  reference = image_of(arrays, report, "MR_small.dcm")
  for rel in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm",
              "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
    np.testing.assert_array_equal(image_of(arrays, report, rel), reference, err_msg=rel)


# ------------------------------------------------------------------ pixels vs pydicom

def _luma(rgb):
  return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _voi_unit(ds, arr):
  """pydicom's modality + VOI LUT, scaled from its documented output range to [0, 1]."""
  values = processing.apply_modality_lut(arr, ds)
  out = processing.apply_voi_lut(values, ds, index=0)
  bits = int(ds.BitsStored)
  lo, hi = (0, 2 ** bits - 1) if ds.PixelRepresentation == 0 else (
      -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
  if "RescaleSlope" in ds:
    lo = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hi = hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
  return np.clip((out - lo) / (hi - lo), 0, 1)


def _expected(unit):
  return images_lib.fit_to_size(unit * 255.0, SIZE)[..., 0].astype(int)


def test_palette_color_is_applied(pydicom_build):
  _, arrays, report = pydicom_build
  ds = pydicom.dcmread(os.path.join(TEST_FILES, "examples_palette.dcm"))
  rgb = processing.apply_color_lut(ds.pixel_array, ds)
  full = 255.0 if rgb.dtype == np.uint8 else 65535.0
  stored = image_of(arrays, report, "examples_palette.dcm").astype(int)
  assert np.abs(stored - _expected(_luma(rgb) / full)).max() <= 1
  raw_indices = _expected(ds.pixel_array / 255.0)   # what was stored before
  assert stored.mean() < 0.5 * raw_indices.mean()   # indices are far brighter than the colours


def test_monochrome1_and_voi_window_match_pydicom(pydicom_build):
  _, arrays, report = pydicom_build
  rel = "dicomdirtests/77654033/CR1/6154"   # CR, MONOCHROME1, rescale and a window
  ds = pydicom.dcmread(os.path.join(TEST_FILES, rel))
  assert ds.PhotometricInterpretation == "MONOCHROME1" and "WindowCenter" in ds
  stored = image_of(arrays, report, rel).astype(int)
  assert np.abs(stored - _expected(1.0 - _voi_unit(ds, ds.pixel_array))).max() <= 1
  rel = "MR_small.dcm"                        # MONOCHROME2 with a window
  ds = pydicom.dcmread(os.path.join(TEST_FILES, rel))
  stored = image_of(arrays, report, rel).astype(int)
  assert np.abs(stored - _expected(_voi_unit(ds, ds.pixel_array))).max() <= 1


def test_rescale_gives_hounsfield_units_and_monochrome1_inverts(tmp_path):
  root = tmp_path / "d"
  root.mkdir()
  ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
  ds.save_as(root / "a.dcm")
  # The same HU stored differently: pixels + 100 with the intercept 100 lower.
  shifted = ds.pixel_array.astype(np.int16) + 100
  ds.PixelData = shifted.tobytes()
  ds.RescaleIntercept = float(ds.RescaleIntercept) - 100
  ds.save_as(root / "b.dcm")
  mr = pydicom.dcmread(os.path.join(TEST_FILES, "MR_small.dcm"))
  mr.save_as(root / "m2.dcm")
  mr.PhotometricInterpretation = "MONOCHROME1"
  mr.save_as(root / "m1.dcm")
  a, info = dicom_pixels.read_display(str(root / "a.dcm"))
  b, _ = dicom_pixels.read_display(str(root / "b.dcm"))
  assert info["window"] == "percentile"        # CT_small carries no window: stated
  np.testing.assert_allclose(a, b, atol=1e-6)
  hu = processing.apply_modality_lut(pydicom.dcmread(root / "a.dcm").pixel_array, ds)
  lo, hi = np.percentile(hu, images_lib.WINDOW_PERCENTILES)
  np.testing.assert_allclose(a, np.clip((hu - lo) / (hi - lo), 0, 1), atol=1e-5)
  m1, _ = dicom_pixels.read_display(str(root / "m1.dcm"))
  m2, _ = dicom_pixels.read_display(str(root / "m2.dcm"))
  np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_multiframe_takes_the_middle_frame_and_ybr_is_rgb():
  path = os.path.join(TEST_FILES, "SC_rgb_rle_2frame.dcm")
  image, info = dicom_pixels.read_display(path)
  ds = pydicom.dcmread(path)
  assert info["frames"] == 2
  np.testing.assert_allclose(image, _luma(ds.pixel_array[1]) / 255.0, atol=1e-6)
  ybr, _ = dicom_pixels.read_display(os.path.join(TEST_FILES, "SC_ybr_full_422_uncompressed.dcm"))
  rgb, _ = dicom_pixels.read_display(os.path.join(TEST_FILES, "SC_rgb_rle.dcm"))   # same
  assert np.abs(ybr - rgb).mean() < 0.02      # YBR converted, not read as RGB


def test_header_less_file_with_pixels_is_read(tmp_path):
  ds = pydicom.dcmread(os.path.join(TEST_FILES, "MR_small.dcm"))
  reference, _ = dicom_pixels.read_display(os.path.join(TEST_FILES, "MR_small.dcm"))
  ds.preamble = None
  del ds.file_meta
  path = tmp_path / "IM000001"   # PACS exports often carry no extension
  ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
  with pytest.raises(pydicom.errors.InvalidDicomError):
    pydicom.dcmread(path)
  image, info = dicom_pixels.read_display(str(path))
  assert info["file_meta"] is False
  np.testing.assert_allclose(image, reference)


# ------------------------------------------------------------------ labels

def _copy_with(src, dst, **tags):
  ds = pydicom.dcmread(os.path.join(TEST_FILES, src))
  for keyword, value in tags.items():
    setattr(ds, keyword, value)
  ds.save_as(dst)


def test_labels_normal_classes_description_rules_and_patients(tmp_path):
  root = tmp_path / "d"
  root.mkdir()
  _copy_with("CT_small.dcm", root / "head.dcm", BodyPartExamined="HEAD", PatientID="p1")
  _copy_with("CT_small.dcm", root / "head2.dcm", BodyPartExamined="HEAD", PatientID="p1")
  _copy_with("MR_small.dcm", root / "flair.dcm", SeriesDescription="Ax FLAIR brain",
             PatientID="p2")
  _copy_with("MR_small.dcm", root / "stroke.dcm", StudyDescription="acute STROKE",
             SeriesDescription="dwi", PatientID="p3")
  _copy_with("MR_small.dcm", root / "spine.dcm", BodyPartExamined="SPINE", PatientID="p4")
  mapping = tmp_path / "map.json"
  mapping.write_text(json.dumps({
      "descriptions": [{"pattern": "flair", "organ": "brain", "disease": "glioma"},
                       {"pattern": "stroke", "field": "StudyDescription", "organ": "brain",
                        "disease": "stroke"}],
      "diseases": {"brain": ["brain_normal", "glioma", "stroke"]}}))
  builder, arrays, report = build(data_cfg(root, str(mapping)), tmp_path / "t")
  schema = builder.schema()
  assert schema["disease"].vocabulary[:3] == ("brain_normal", "glioma", "stroke")
  labels = {f["path"]: f.get("labels") for f in report["files"]}
  assert labels["head.dcm"] == {"modality": "CT", "organ": "brain", "disease": "brain_normal"}
  assert labels["flair.dcm"] == {"modality": "MRI", "organ": "brain", "disease": "glioma"}
  assert labels["stroke.dcm"]["disease"] == "stroke"
  spine = next(f for f in report["files"] if f["path"] == "spine.dcm")
  assert spine["reason"] == dicom_dir.UNMAPPED_ORGAN
  assert report["summary"]["unmapped_values"] == {"BodyPartExamined": {"SPINE": 1}}
  ids = {f["path"]: f["id"] for f in report["files"] if "id" in f}
  assert arrays["group"][ids["head.dcm"]] == arrays["group"][ids["head2.dcm"]]   # PatientID
  assert arrays["group"][ids["head.dcm"]] != arrays["group"][ids["flair.dcm"]]
  # The default vocabulary names a normal class for every organ.
  for organ, diseases in dicom_dir.DEFAULT_DISEASES.items():
    assert f"{organ}_normal" in diseases
  with pytest.raises(ValueError, match=r"spine\.dcm: BodyPartExamined.*'SPINE'.*strict"):
    get_builder(data_cfg(root, str(mapping), strict_labels=True), str(tmp_path / "t"))
  mapping.write_text(json.dumps({"descriptions": [{"pattern": "(", "organ": "brain"}]}))
  with pytest.raises(ValueError, match=r"descriptions\[0\]\.pattern is not a regular"):
    get_builder(data_cfg(root, str(mapping)), str(tmp_path / "t"))
  mapping.write_text(json.dumps({"descriptions": [{"pattern": "x", "disease": "stroke"}]}))
  with pytest.raises(ValueError, match=r"descriptions\[0\]\.disease = 'stroke'"):
    get_builder(data_cfg(root, str(mapping)), str(tmp_path / "t"))
