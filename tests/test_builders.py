"""TFDS builders: each built from small files the test creates (DICOM: pydicom's own files).

Everything is ArrayRecord + Tensor features read back through `as_data_source()`, with no
TensorFlow anywhere.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from PIL import Image

from dnh_jax import config_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base
from dnh_jax.data.builders import get_builder
from dnh_jax.data.builders import medphantom


def data_cfg(**overrides):
  cfg = config_lib.base_config().data
  cfg.image_size = 32
  cfg.num_examples = 36
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def build(cfg, data_dir):
  builder = base.prepare(get_builder(cfg, str(data_dir)))
  return builder, base.read_arrays(builder)


def combos_of(arrays, schema):
  return [(schema["modality"].vocabulary[m], schema["organ"].vocabulary[o],
           schema["disease"].vocabulary[d])
          for m, o, d in zip(arrays["modality"], arrays["organ"], arrays["disease"])]


# ------------------------------------------------------------------------ MedPhantom

def test_medphantom_is_balanced_deterministic_and_cached(tmp_path):
  cfg = data_cfg(num_examples=40, held_out=("MRI/breast",))
  builder, arrays = build(cfg, tmp_path / "a")
  assert builder.info.file_format.value == "array_record"
  assert "tensorflow" not in sys.modules
  assert arrays["image"].shape == (40, 32, 32, 1) and arrays["image"].dtype == np.uint8
  np.testing.assert_array_equal(arrays["id"], np.arange(40))
  combos = combos_of(arrays, builder.schema())
  # Published 15 + the held-out pair's 3 diseases, balanced (counts differ by <= 1).
  expected = set(schema_lib.PUBLISHED_COMBINATIONS) | {
      ("MRI", "breast", d) for d in schema_lib.DISEASES_BY_ORGAN["breast"]}
  assert set(combos) == expected
  counts = [combos.count(c) for c in expected]
  assert max(counts) - min(counts) <= 1
  # Deterministic: a fresh build elsewhere is identical, image for image.
  _, again = build(cfg, tmp_path / "b")
  for key in arrays:
    np.testing.assert_array_equal(arrays[key], again[key])
  # A cache hit is exact and reuses the files: the second prepare does not render.
  mtime = os.path.getmtime(builder.data_path / "dataset_info.json")
  cached = base.prepare(get_builder(cfg, str(tmp_path / "a")))
  assert cached.data_path == builder.data_path
  assert os.path.getmtime(cached.data_path / "dataset_info.json") == mtime


def test_medphantom_config_names_encode_every_parameter(tmp_path):
  names = set()
  for overrides in [{}, {"image_size": 48}, {"num_examples": 37}, {"difficulty": 0.5},
                    {"combinations": "all"}, {"combinations": "MRI/brain,US/breast"},
                    {"held_out": ("CT/brain",)}, {"dataset_seed": 1}]:
    names.add(get_builder(data_cfg(**overrides), str(tmp_path)).builder_config.name)
  assert len(names) == 8
  same = [get_builder(data_cfg(), str(tmp_path)).builder_config.name for _ in range(2)]
  assert same[0] == same[1]


def test_medphantom_examples_are_independent_of_count(tmp_path):
  # Example i depends only on (dataset seed, i): a longer collection extends a shorter one.
  _, small = build(data_cfg(num_examples=15, image_size=28), tmp_path)
  _, large = build(data_cfg(num_examples=20, image_size=28), tmp_path)
  np.testing.assert_array_equal(small["image"], large["image"][:15])


def test_parallel_rendering_gives_identical_examples(tmp_path):
  builder = get_builder(data_cfg(num_examples=6, image_size=28), str(tmp_path))
  items = [(builder.params, i) for i in range(6)]
  serial = list(base.parallel_map(medphantom._render_single, items, 1))
  parallel = list(base.parallel_map(medphantom._render_single, items, 2))
  np.testing.assert_array_equal(np.stack(serial), np.stack(parallel))


def test_combination_parsing():
  assert len(medphantom.parse_combinations("published")) == 15
  assert len(medphantom.parse_combinations("all")) == 5 * 15
  assert medphantom.parse_combinations("CT/chest/covid") == (("CT", "chest", "covid"),)
  assert len(medphantom.parse_combinations("MRI/brain,US/breast")) == 6
  with pytest.raises(ValueError, match=r"unknown modality 'MRT'.*\['CT', 'MRI'"):
    medphantom.parse_combinations("MRT/brain")
  with pytest.raises(ValueError, match=r"unknown organ 'lung'"):
    medphantom.parse_combinations("CT/lung")
  with pytest.raises(ValueError, match=r"'glioma'.*not a disease of chest"):
    medphantom.parse_combinations("CT/chest/glioma")
  with pytest.raises(ValueError, match=r"data.held_out.*'MRI-breast'"):
    medphantom.parse_held_out(("MRI-breast",))


def test_medphantom_chest_multilabel(tmp_path):
  builder, arrays = build(data_cfg(multilabel=True, num_examples=30), tmp_path)
  assert builder.schema().names == ("findings",)
  assert arrays["findings"].shape == (30, 13) and arrays["findings"].dtype == np.uint8
  chest = get_builder(data_cfg(name="medphantom_chest", num_examples=30), str(tmp_path))
  assert chest.builder_config.name == builder.builder_config.name
  with pytest.raises(ValueError, match="data.held_out"):
    get_builder(data_cfg(multilabel=True, held_out=("MRI/breast",)), str(tmp_path))


def test_bad_medphantom_parameters_raise(tmp_path):
  with pytest.raises(ValueError, match="data.image_size"):
    get_builder(data_cfg(image_size=16), str(tmp_path))
  with pytest.raises(ValueError, match="data.num_examples"):
    get_builder(data_cfg(num_examples=0), str(tmp_path))
  with pytest.raises(ValueError, match=r"data.name='medphantm'.*'medphantom'"):
    get_builder(data_cfg(name="medphantm"), str(tmp_path))


# ------------------------------------------------------------ half-built datasets

def test_interrupted_build_is_never_mistaken_for_complete(tmp_path, monkeypatch):
  from dnh_jax.data.medphantom import renderer as phantom
  cfg = data_cfg(num_examples=20, image_size=28)
  real = phantom.render
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 12:
      raise RuntimeError("interrupted")
    return real(*args, **kwargs)

  monkeypatch.setattr(phantom, "render", failing)
  builder = get_builder(cfg, str(tmp_path))
  with pytest.raises(RuntimeError, match="interrupted"):
    base.prepare(builder)
  assert not builder.data_path.exists() and not base.is_prepared(builder)
  monkeypatch.setattr(phantom, "render", real)
  rebuilt = base.prepare(get_builder(cfg, str(tmp_path)))
  assert rebuilt.info.splits[base.SPLIT].num_examples == 20
  with pytest.raises(ValueError, match="holds 20 examples, expected 21"):
    base.prepare(get_builder(cfg, str(tmp_path)), expected_examples=21)


def test_killed_build_leaves_only_an_incomplete_dir(tmp_path):
  # A process killed mid-build (no cleanup at all) leaves an `incomplete.*` directory;
  # the dataset then counts as absent and the next load builds it in full.
  script = textwrap.dedent(f"""
      import os
      from dnh_jax import config_lib
      from dnh_jax.data.medphantom import renderer as phantom
      from dnh_jax.data.builders import base, get_builder
      cfg = config_lib.base_config().data
      cfg.image_size, cfg.num_examples = 28, 20
      real, calls = phantom.render, []
      def dying(*a, **k):
        calls.append(1)
        if len(calls) == 15:
          os._exit(17)
        return real(*a, **k)
      phantom.render = dying
      base.prepare(get_builder(cfg, {str(tmp_path)!r}))
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 17, proc.stderr[-2000:]
  cfg = data_cfg(num_examples=20, image_size=28)
  builder = get_builder(cfg, str(tmp_path))
  leftovers = [p.name for p in builder.data_path.parent.iterdir()]
  assert leftovers and all(n.startswith("incomplete") for n in leftovers), leftovers
  assert not base.is_prepared(builder)
  arrays = base.read_arrays(base.prepare(builder))
  assert len(arrays["id"]) == 20


def test_losing_a_build_race_reads_the_winners_copy(tmp_path, monkeypatch):
  cfg = data_cfg(num_examples=10, image_size=28)
  winner = base.prepare(get_builder(cfg, str(tmp_path)))
  loser = get_builder(cfg, str(tmp_path))
  calls = []
  monkeypatch.setattr(base, "is_prepared", lambda b: bool(calls) and b.data_path.exists())

  def rename_fails(**kwargs):   # the final rename found the winner's directory in place
    calls.append(kwargs)
    raise OSError("Directory not empty")

  monkeypatch.setattr(loser, "download_and_prepare", rename_fails)
  got = base.prepare(loser)
  assert calls and got.data_path == winner.data_path
  assert got.info.splits[base.SPLIT].num_examples == 10


# ----------------------------------------------------------------------- MedMNIST

def write_medmnist(path, n=(6, 3, 4), size=28, classes=4, rgb=False, multilabel=False,
                   drop=()):
  rng = np.random.default_rng(0)
  arrays = {}
  for part, count in zip(("train", "val", "test"), n):
    shape = (count, size, size, 3) if rgb else (count, size, size)
    arrays[f"{part}_images"] = rng.integers(0, 256, shape).astype(np.uint8)
    if multilabel:
      arrays[f"{part}_labels"] = (rng.random((count, 14)) < 0.3).astype(np.uint8)
    else:
      arrays[f"{part}_labels"] = (np.arange(count) % classes).reshape(-1, 1)
  for key in drop:
    del arrays[key]
  np.savez(path, **arrays)
  return arrays


def test_medmnist_single_label_subsets(tmp_path):
  manual = tmp_path / "medmnist"
  manual.mkdir()
  oct_arrays = write_medmnist(manual / "octmnist.npz", classes=4)
  write_medmnist(manual / "pneumoniamnist_64.npz", size=64, classes=2)
  write_medmnist(manual / "breastmnist.npz", classes=2, rgb=True)
  write_medmnist(manual / "pathmnist.npz", classes=9)   # unsupported: ignored by default
  builder, arrays = build(data_cfg(name="medmnist", manual_dir=str(manual)), tmp_path / "tfds")
  assert len(arrays["id"]) == 3 * 13
  combos = combos_of(arrays, builder.schema())
  assert combos.count(("OCT", "retina", "cnv")) == 2 + 1 + 1
  assert {c for c in combos if c[0] == "XR"} == {("XR", "chest", "chest_normal"),
                                                  ("XR", "chest", "pneumonia")}
  assert {c for c in combos if c[0] == "US"} == {("US", "breast", "malignant"),
                                                  ("US", "breast", "benign")}
  # Subsets are pooled in name order (breast, oct, pneumonia), parts in train/val/test order.
  assert combos[:13] == [("US", "breast", "malignant"), ("US", "breast", "benign")] * 3 + [
      ("US", "breast", "malignant"), ("US", "breast", "benign"), ("US", "breast", "malignant"),
      ("US", "breast", "malignant"), ("US", "breast", "benign"), ("US", "breast", "malignant"),
      ("US", "breast", "benign")]
  # With image_size 28 the 28 px images are stored unchanged.
  one = build(data_cfg(name="medmnist", manual_dir=str(manual), image_size=28,
                       subsets=("OCTMNIST",)), tmp_path / "tfds")[1]
  np.testing.assert_array_equal(one["image"][0, ..., 0], oct_arrays["train_images"][0])


def test_medmnist_chest_multilabel_drops_hernia(tmp_path):
  manual = tmp_path / "m"
  manual.mkdir()
  arrays = write_medmnist(manual / "chestmnist.npz", multilabel=True, n=(8, 4, 4))
  labels = np.concatenate([arrays[f"{p}_labels"] for p in ("train", "val", "test")])
  labels[3] = 0
  labels[3, 13] = 1      # hernia only: left out
  labels[4] = 0          # no finding: kept, all zeros
  np.savez(manual / "chestmnist.npz", **{**arrays, "train_labels": labels[:8]})
  builder, out = build(data_cfg(name="medmnist", manual_dir=str(manual), multilabel=True),
                       tmp_path / "tfds")
  assert builder.schema().names == ("findings",)
  assert len(out["id"]) == 15
  keep = np.delete(labels, 3, axis=0)[:, :13]
  np.testing.assert_array_equal(out["findings"], keep)


def test_medmnist_bad_inputs(tmp_path):
  manual = tmp_path / "m"
  manual.mkdir()
  write_medmnist(manual / "octmnist.npz", drop=("val_labels",))
  with pytest.raises(ValueError, match=r"octmnist\.npz has no key 'val_labels'"):
    get_builder(data_cfg(name="medmnist", manual_dir=str(manual)), str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"data.manual_dir .*nowhere.*npz"):
    get_builder(data_cfg(name="medmnist", manual_dir=str(tmp_path / "nowhere")),
                str(tmp_path))
  with pytest.raises(ValueError, match=r"unknown MedMNIST subset 'dermamnist'.*octmnist"):
    get_builder(data_cfg(name="medmnist", manual_dir=str(manual), subsets=("dermamnist",)),
                str(tmp_path))
  with pytest.raises(ValueError, match="mixes single-label"):
    get_builder(data_cfg(name="medmnist", manual_dir=str(manual),
                         subsets=("octmnist", "chestmnist")), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="pneumoniamnist"):
    get_builder(data_cfg(name="medmnist", manual_dir=str(manual),
                         subsets=("pneumoniamnist",)), str(tmp_path))
  write_medmnist(manual / "octmnist.npz", classes=5)   # label 4 is out of range
  with pytest.raises(ValueError, match=r"octmnist\.npz: train_labels holds label 4"):
    build(data_cfg(name="medmnist", manual_dir=str(manual)), tmp_path / "t2")


# -------------------------------------------------------------------- folder tree

def _png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def test_image_folder_tree_any_format(tmp_path):
  root = tmp_path / "tree"
  rng = np.random.default_rng(0)
  _png(root / "MRI/brain/glioma/p1/a.png", rng.integers(0, 256, (40, 30), np.uint8))
  _png(root / "MRI/brain/glioma/p1/b.png", (rng.integers(0, 4000, (50, 50))).astype(np.uint16))
  _png(root / "mri/Brain/meningioma/c.jpg", rng.integers(0, 256, (20, 20, 3), np.uint8))
  (root / "XR/chest/normal").mkdir(parents=True)
  np.save(root / "XR/chest/normal/d.npy", rng.integers(-1000, 2000, (64, 64)).astype(np.int16))
  dicom = _pydicom_file("CT_small.dcm")
  (root / "CT/chest/covid").mkdir(parents=True)
  shutil.copy(dicom, root / "CT/chest/covid/e.dcm")
  (root / "CT/chest/covid/.DS_Store").write_bytes(b"hidden files are ignored")
  builder, arrays = build(data_cfg(name="image_folder", manual_dir=str(root)), tmp_path / "t")
  combos = combos_of(arrays, builder.schema())
  assert sorted(combos) == sorted([("MRI", "brain", "glioma")] * 2 + [
      ("MRI", "brain", "meningioma"), ("XR", "chest", "chest_normal"),
      ("CT", "chest", "covid")])
  assert arrays["image"].shape == (5, 32, 32, 1)
  glioma = [i for i, c in enumerate(combos) if c[2] == "glioma"]
  assert arrays["group"][glioma[0]] == arrays["group"][glioma[1]]   # same patient folder
  assert len(set(arrays["group"].tolist())) == 4


@pytest.mark.parametrize("path,match", [
    ("PET/brain/glioma/a.png", r"unknown modality folder 'PET'.*\['CT', 'MRI'"),
    ("MRI/lung/glioma/a.png", r"unknown organ folder 'lung'.*'brain'"),
    ("MRI/brain/flu/a.png", r"brain.*unknown disease.*'flu'.*'glioma'"),
    ("MRI/brain/pneumonia/a.png", r"'pneumonia' is not a disease of organ 'brain'"),
    ("MRI/brain/a.png", r"a\.png: file outside a disease folder"),
    ("MRI/brain/glioma/notes.txt", r"notes\.txt: unsupported file type"),
])
def test_image_folder_bad_names_raise_naming_path(tmp_path, path, match):
  root = tmp_path / "tree"
  target = root / path
  if path.endswith(".png"):
    _png(target, np.zeros((8, 8), np.uint8))
  else:
    target.parent.mkdir(parents=True)
    target.write_text("x")
  with pytest.raises(ValueError, match=match):
    get_builder(data_cfg(name="image_folder", manual_dir=str(root)), str(tmp_path))


def test_missing_manual_dir_raises_naming_it(tmp_path):
  for name in ("image_folder", "chestxray14", "dicom", "medmnist"):
    with pytest.raises((FileNotFoundError, ValueError), match=r"data.manual_dir.*expected"):
      get_builder(data_cfg(name=name, manual_dir=str(tmp_path / "absent")), str(tmp_path))
    with pytest.raises(ValueError, match=r"data.manual_dir is empty"):
      get_builder(data_cfg(name=name), str(tmp_path))


# -------------------------------------------------------------------- ChestX-ray14

def write_chestxray14(root, rows):
  lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age"]
  for i, (labels, patient) in enumerate(rows):
    name = f"{i:08d}_000.png"
    lines.append(f"{name},{labels},0,{patient},50")
    folder = root / f"images_{1 + i % 2:03d}" / "images"
    _png(folder / name, np.full((64, 64), 10 * i, np.uint8))
  (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")


def test_chestxray14(tmp_path):
  root = tmp_path / "cxr"
  root.mkdir()
  write_chestxray14(root, [("No Finding", 1), ("Effusion|Edema", 1), ("Hernia", 2),
                           ("Hernia|Mass", 3), ("Pleural_Thickening", 4)])
  builder, arrays = build(data_cfg(name="chestxray14", manual_dir=str(root)), tmp_path / "t")
  findings = builder.schema()["findings"]
  decoded = [findings.decode(v) for v in arrays["findings"]]
  assert decoded == [(), ("effusion", "edema"), ("mass",), ("pleural_thickening",)]
  np.testing.assert_array_equal(arrays["group"], [1, 1, 3, 4])
  assert arrays["image"][1, 0, 0, 0] == 10   # the second row's image, found in images_002


def test_chestxray14_bad_inputs(tmp_path):
  root = tmp_path / "cxr"
  root.mkdir()
  write_chestxray14(root, [("Effusion|Flu", 1)])
  with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv:2: unknown finding 'Flu'"):
    get_builder(data_cfg(name="chestxray14", manual_dir=str(root)), str(tmp_path))
  write_chestxray14(root, [("Effusion", 1), ("Mass", 2)])
  os.remove(root / "images_002/images/00000001_000.png")
  with pytest.raises(FileNotFoundError, match=r"1 of the 2 images.*00000001_000\.png"):
    get_builder(data_cfg(name="chestxray14", manual_dir=str(root)), str(tmp_path))
  (root / "Data_Entry_2017.csv").write_text("Image Index,Labels\nx.png,Mass\n")
  with pytest.raises(ValueError, match=r"missing column 'Finding Labels'"):
    get_builder(data_cfg(name="chestxray14", manual_dir=str(root)), str(tmp_path))
  os.remove(root / "Data_Entry_2017.csv")
  with pytest.raises(FileNotFoundError, match=r"has no Data_Entry_2017\.csv"):
    get_builder(data_cfg(name="chestxray14", manual_dir=str(root)), str(tmp_path))


# --------------------------------------------------------------------------- DICOM

def _pydicom_file(name):
  from pydicom.data import get_testdata_file
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    path = get_testdata_file(name, download=False)
  assert path is not None, f"pydicom ships {name}"
  return path


def test_dicom_directory_with_mapping(tmp_path):
  root = tmp_path / "dicom"
  (root / "series").mkdir(parents=True)
  shutil.copy(_pydicom_file("CT_small.dcm"), root / "ct.dcm")          # CT, no body part
  shutil.copy(_pydicom_file("MR_small.dcm"), root / "series/mr.dcm")   # MR, no body part
  shutil.copy(_pydicom_file("examples_overlay.dcm"), root / "abd.dcm")  # MR ABDOMEN uint16
  shutil.copy(_pydicom_file("ExplVR_BigEnd.dcm"), root / "us.dcm")     # US, RGB big-endian
  (root / "README.txt").write_text("non-DICOM files are skipped and reported")
  mapping = tmp_path / "map.json"
  mapping.write_text(json.dumps({
      "default_organ": "chest",
      "files": {"series/mr.dcm": {"organ": "brain", "disease": "glioma"},
                "us.dcm": {"organ": "breast", "disease": "benign"}}}))
  builder, arrays = build(data_cfg(name="dicom", manual_dir=str(root), label_map=str(mapping)),
                          tmp_path / "t")
  combos = combos_of(arrays, builder.schema())
  # Sorted paths: abd.dcm, ct.dcm, series/mr.dcm, us.dcm.
  assert combos == [("MRI", "abdomen", "abdomen_normal"), ("CT", "chest", "chest_normal"),
                    ("MRI", "brain", "glioma"), ("US", "breast", "benign")]
  assert arrays["image"].shape == (4, 32, 32, 1)
  # Displayed through each file's window (VOI) or percentiles: never a flat image.
  assert all(int(img.max()) - int(img.min()) > 150 for img in arrays["image"])
  report = json.loads((builder.data_path / "ingest_report.json").read_text())
  assert [(f["path"], f["reason"]) for f in report["files"] if f["status"] == "skipped"] == [
      ("README.txt", "not_dicom")]
  # Groups come from PatientID: files of one patient share a group.
  from pydicom import dcmread
  pids = [str(dcmread(root / p, stop_before_pixels=True).get("PatientID", ""))
          for p in ("abd.dcm", "ct.dcm", "series/mr.dcm", "us.dcm")]
  for i in range(4):
    for j in range(4):
      if pids[i] and pids[i] == pids[j]:
        assert arrays["group"][i] == arrays["group"][j]


def test_dicom_bad_inputs_are_skipped_and_reported(tmp_path):
  root = tmp_path / "dicom"
  root.mkdir()
  cfg = data_cfg(name="dicom", manual_dir=str(root))
  shutil.copy(_pydicom_file("CT_small.dcm"), root / "ct.dcm")
  # The only file has no BodyPartExamined and no default: nothing usable, one line.
  with pytest.raises(ValueError, match=r"no usable DICOM image .*unmapped_organ.*"
                                       r"BodyPartExamined"):
    get_builder(cfg, str(tmp_path))
  cfg.strict_labels = True
  with pytest.raises(ValueError, match=r"ct\.dcm: BodyPartExamined \(0018,0015\) ''.*"
                                       r"default_organ.*strict_labels"):
    get_builder(cfg, str(tmp_path))
  cfg.strict_labels = False
  mapping = tmp_path / "map.json"
  mapping.write_text(json.dumps({"default_organ": "chest", "modality": {"NM": None}}))
  cfg.label_map = str(mapping)
  shutil.copy(_pydicom_file("rtplan.dcm"), root / "plan.dcm")
  shutil.copy(_pydicom_file("JPEG2000.dcm"), root / "nm.dcm")   # NM mapped to null
  (root / "fake.dcm").write_bytes(b"this is not DICOM")
  shutil.copy(_pydicom_file("MR_truncated.dcm"), root / "trunc.dcm")
  builder, arrays = build(cfg, tmp_path / "t1")
  assert len(arrays["id"]) == 1
  report = json.loads((builder.data_path / "ingest_report.json").read_text())
  reasons = {f["path"]: f["reason"] for f in report["files"]}
  assert reasons == {"ct.dcm": None, "fake.dcm": "not_dicom", "nm.dcm": "excluded_by_label_map",
                     "plan.dcm": "no_pixel_data", "trunc.dcm": "truncated_pixel_data"}
  mapping.write_text(json.dumps({"modality": {"RTPLAN": "CT"}, "default_organ": "chest"}))
  os.remove(root / "ct.dcm")
  os.remove(root / "trunc.dcm")
  with pytest.raises(ValueError, match=r"no usable DICOM image.*no_pixel_data"):
    get_builder(cfg, str(tmp_path))
  mapping.write_text(json.dumps({"organ": {"HEAD": "skull"}}))
  with pytest.raises(ValueError, match=r"map\.json: organ\['HEAD'\] = 'skull'.*'brain'"):
    get_builder(cfg, str(tmp_path))
  mapping.write_text(json.dumps({"organs": {}}))
  with pytest.raises(ValueError, match=r"unknown key 'organs'"):
    get_builder(cfg, str(tmp_path))
