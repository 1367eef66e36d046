"""The retrieval application on a quick-trained model: Retriever, index build / append /
search / export, and the run report.

One tiny model (configs/untrained_combo.py:quick shrunk to 480 images and 4 steps) is
trained once per session; every test uses its workdir.
"""

import importlib.util
import io
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from dnh_jax import config_lib
from dnh_jax import data as data_lib
from dnh_jax import index as index_cli
from dnh_jax.retrieval import GalleryIndex, pack_codes, unpack_codes
from dnh_jax.retrieval import search as search_lib
from dnh_jax.retrieval.retriever import CheckpointError, Retriever

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
PREFERENCES = ("all", "organ", "modality=2,organ=1,disease=0", "modality>organ>disease")


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(CONFIGS, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config():
  c = load_config("untrained_combo", "quick")
  c.data.num_examples = 480
  c.train.steps = 4
  c.train.batch_size = 16
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.train.log_every = 2
  c.train.warmup_steps = 0
  return c


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  from dnh_jax import train  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("quick_model"))
  from dnh_jax.report import run_report  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(tiny_config(), path, after_run=run_report.write_after_run)
  return path


@pytest.fixture(scope="session")
def retriever(workdir):
  return Retriever.from_workdir(workdir)


@pytest.fixture(scope="session")
def splits(retriever):
  c = retriever.config
  return data_lib.load_splits(c.data, seed=c.seed, data_dir=data_lib.default_data_dir(c.data))


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory, splits, retriever):
  """12 query-split images as 64 px PNGs in the <modality>/<organ>/<disease> layout; an
  unlabelled 16-bit .npy, 16-bit TIFF, RGB JPEG and DICOM (pydicom's CT_small.dcm); a
  broken PNG and a text file."""
  root = tmp_path_factory.mktemp("images")
  q = splits.data["query"]
  for i in range(12):
    names = retriever.schema.decode({k: v[i] for k, v in q.labels.items()})
    folder = root / names["modality"] / names["organ"] / names["disease"]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(q.images[i, ..., 0]).resize((64, 64)).save(folder / f"img{i}.png")
  (root / "misc").mkdir()
  np.save(root / "misc" / "raw.npy", q.images[20, ..., 0].astype(np.uint16) * 100)
  Image.fromarray(q.images[21, ..., 0].astype(np.uint16) * 200).save(root / "misc" / "scan.tif")
  Image.fromarray(np.repeat(q.images[22], 3, axis=-1)).save(root / "misc" / "photo.jpg")
  from pydicom.data import get_testdata_file  # pylint: disable=g-import-not-at-top
  shutil.copy(get_testdata_file("CT_small.dcm", download=False), root / "misc" / "ct.dcm")
  (root / "misc" / "broken.png").write_bytes(b"not a png")
  (root / "misc" / "notes.txt").write_text("x")
  return root


@pytest.fixture(scope="session")
def gallery_index(workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("index") / "gallery.dnhidx")
  assert index_cli.main(["build", f"--workdir={workdir}", f"--out={out}", "--split=gallery"]) == 0
  return out


def cli(capsys, *argv):
  rc = index_cli.main(list(argv))
  out = capsys.readouterr()
  return rc, out.out, out.err


# ----------------------------------------------------------------------------- config + model

@pytest.mark.parametrize("name,arg", [("baseline", None), ("baseline", "quick"), ("ophash", None),
                                      ("structured", None), ("fuzzy_multilabel", None),
                                      ("untrained_combo", "quick,model=flat")])
def test_config_round_trip(name, arg):
  c = load_config(name, arg)
  back = config_lib.config_from_json(c.to_json_best_effort())
  assert back.to_dict() == c.to_dict()
  assert isinstance(back.data.split, tuple) and back.report.html is True


def test_written_config_round_trips(workdir):
  c = config_lib.load_config_file(os.path.join(workdir, "config.json"))
  assert c.to_dict() == tiny_config().to_dict()


def test_retriever_equals_trainer_codes(workdir, retriever, splits):
  """The trainer's own test codes (its state, encoder and mesh) for the same images."""
  from dnh_jax import checkpointing, losses, models, parallel, train  # pylint: disable=g-import-not-at-top
  c = retriever.config
  mesh = parallel.make_mesh(c.mesh.data)
  model = models.build_model(c.model, splits.schema)
  tx = train.make_optimizer(c.train)
  images = splits.data["query"].images
  state, _ = train.create_train_state(model, losses.get_loss(c.loss, splits.schema), tx, mesh,
                                      images.shape[1:], jax.random.key(0))
  ckpt = checkpointing.Checkpoints(os.path.join(workdir, "checkpoints"), keep=2,
                                   best_metric=c.train.best_metric)
  state = ckpt.restore_best(checkpointing.abstract(state))
  best_step = ckpt.best_step()   # chosen on validation: step 2 or 4
  ckpt.close()
  assert int(state["step"]) == retriever.step == best_step and best_step in (2, 4)
  expected = train.encode(train.make_encoder(model, mesh), state, images, mesh, c.eval.batch_size)
  got = retriever.encode(images)
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
  margin = np.abs(expected) > 1e-4  # signs away from 0 agree bit for bit
  assert np.array_equal((got >= 0)[margin], (expected >= 0)[margin])
  last = Retriever.from_workdir(workdir, checkpoint="last")
  assert last.step == 4 and Retriever.from_workdir(workdir, checkpoint=2).step == 2


def test_retriever_fails_clearly(workdir, retriever, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Retriever.from_workdir(str(tmp_path / "nothing"))
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), empty)
  shutil.copy(os.path.join(workdir, "split_manifest.json"), empty)
  with pytest.raises(CheckpointError, match="no checkpoint"):
    Retriever.from_workdir(str(empty))
  with pytest.raises(CheckpointError, match="no checkpoint of step 3"):
    Retriever.from_workdir(workdir, checkpoint=3)
  other = tmp_path / "other"
  shutil.copytree(workdir, other)
  cfg = json.load(open(other / "config.json"))
  cfg["model"]["bits"] = 24
  (other / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match="checkpoint of another model.*bits=24"):
    Retriever.from_workdir(str(other))
  with pytest.raises(ValueError, match=r"uint8\[N, 32, 32, 1\].*resize and convert"):
    retriever.encode(np.zeros((2, 64, 64, 1), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    retriever.encode(np.zeros((2, 32, 32, 1), np.float32))
  rgb = np.random.default_rng(0).integers(0, 255, (2, 50, 70, 3), dtype=np.uint8)
  assert retriever.encode(retriever.prepare(list(rgb))).shape == (2, 48)


# ----------------------------------------------------------------------------- index

def test_build_append_and_load(workdir, retriever, image_tree, tmp_path, capsys, monkeypatch):
  out = str(tmp_path / "folder.dnhidx")
  extra = image_tree / "misc" / "later.png"
  if extra.exists():
    extra.unlink()
  rc, stdout, err = cli(capsys, "build", f"--workdir={workdir}", f"--out={out}",
                        f"--images={image_tree}")
  assert rc == 0, err
  assert "added 16 items" in stdout and "2 skipped" in stdout
  assert re.search(r"skipped .*broken\.png: .*not a readable image", stdout)
  assert re.search(r"skipped .*notes\.txt: unsupported extension", stdout)
  assert "items/s, ETA" in err
  ix = GalleryIndex.load(out, expect_fingerprints=retriever.fingerprints)
  assert len(ix) == 16 and ix.thumbnails.shape == (16, 32, 32)
  assert ix.fingerprints["config"] == retriever.fingerprints["config"]
  raw = list(ix.paths).index(str(image_tree / "misc" / "raw.npy"))
  assert all(ix.labels[n][raw] == -1 for n in retriever.schema.names)  # unlabelled
  xr = [i for i, p in enumerate(ix.paths) if "/XR/chest/" in p]
  assert xr and all(ix.labels["modality"][i] == retriever.schema["modality"].index("XR")
                    for i in xr)
  # Codes equal the Retriever's for the same files, converted the same way.
  np.testing.assert_array_equal(ix.codes, pack_codes(retriever.encode(
      retriever.load_images(list(ix.paths)))))

  Image.fromarray(ix.thumbnails[0]).save(extra)
  encoded = []
  original = Retriever.encode
  monkeypatch.setattr(Retriever, "encode",
                      lambda self, images: encoded.append(len(images)) or original(self, images))
  rc, stdout, _ = cli(capsys, "build", f"--workdir={workdir}", f"--out={out}",
                      f"--images={image_tree}", "--append")
  assert rc == 0 and "added 1 items" in stdout and "16 already in the index" in stdout
  assert encoded == [1]  # only the new file was encoded
  both = GalleryIndex.load(out)
  assert len(both) == 17 and len(set(both.ids.tolist())) == 17
  np.testing.assert_array_equal(both.codes[:16], ix.codes)

  other = GalleryIndex.load(out)
  other.fingerprints["model"] = "0" * 64
  other.save(out)
  rc, _, err = cli(capsys, "build", f"--workdir={workdir}", f"--out={out}",
                   f"--images={image_tree}", "--append")
  assert rc == 2 and "--append" in err and "another model" in err and len(err.splitlines()) == 1
  extra.unlink()


def test_split_index_has_dataset_ids_and_labels(gallery_index, splits):
  ix = GalleryIndex.load(gallery_index)
  g = splits.data["gallery"]
  np.testing.assert_array_equal(ix.ids, g.ids)
  for name, v in g.labels.items():
    np.testing.assert_array_equal(ix.labels[name], v)
  assert ix.paths[0].startswith("medphantom:gallery/") and ix.segments == (16, 16, 16)


def brute_force(index, query_codes, pref, k):
  """Per-segment Hamming distances by unpacked bit comparison, weighted, stable sort."""
  q = unpack_codes(pack_codes(query_codes), index.num_bits)
  g = unpack_codes(index.codes, index.num_bits)
  bounds = np.cumsum((0,) + index.segments)
  sub = np.stack([(q[:, None, a:b] != g[None, :, a:b]).sum(-1)
                  for a, b in zip(bounds[:-1], bounds[1:])], -1)
  d = (sub * np.asarray(pref.segment_weights)).sum(-1)
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  return (np.take_along_axis(d, order, 1), index.ids[order],
          np.take_along_axis(sub, order[..., None], 1))


@pytest.mark.parametrize("spec", PREFERENCES)
def test_search_equals_brute_force(gallery_index, retriever, splits, spec):
  ix = GalleryIndex.load(gallery_index)
  images = splits.data["query"].images[:16]
  res = retriever.search(images, spec, 25, index=ix)
  d, ids, sub = brute_force(ix, retriever.encode(images), retriever.preference(spec), 25)
  np.testing.assert_array_equal(res.distances, d)
  np.testing.assert_array_equal(res.ids, ids)
  np.testing.assert_array_equal(res.subcode_distances, sub)


def test_search_command_outputs(workdir, gallery_index, image_tree, tmp_path, capsys):
  query = sorted((image_tree / "XR").rglob("*.png"))[0]
  raw = image_tree / "misc" / "raw.npy"
  out = {ext: str(tmp_path / f"r.{ext}") for ext in ("json", "png", "html")}
  rc, stdout, err = cli(capsys, "search", f"--index={gallery_index}", f"--workdir={workdir}",
                        "--query", str(query), str(raw), "--preference=modality>organ>disease",
                        "--k=6", f"--json={out['json']}", f"--grid={out['png']}",
                        f"--html={out['html']}")
  assert rc == 0, err
  assert "d(modality)" in stdout and "labels (folder): modality=XR" in stdout
  assert "labels (predicted)" in stdout
  data = json.load(open(out["json"]))
  assert [len(q["results"]) for q in data["queries"]] == [6, 6]
  hit = data["queries"][0]["results"][0]
  assert set(hit) >= {"rank", "id", "path", "labels", "match", "distance", "subcode_distances"}
  w = data["preference"]["segment_weights"]
  for q in data["queries"]:
    for h in q["results"]:
      assert h["distance"] == sum(w[s] * v for s, v in h["subcode_distances"].items())
  with Image.open(out["png"]) as im:
    assert im.format == "PNG" and im.width > 600 and im.height > 300
    assert len(np.unique(np.asarray(im.convert("L")))) > 50  # thumbnails, not a blank page
  page = open(out["html"], encoding="utf-8").read()
  assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 2 * 7
  sources = re.findall(r"src='([^']+)'", page)
  assert len(sources) == 2 * 7  # every thumbnail embedded, nothing referenced outside
  for src in sources:
    assert src.startswith("data:image/png;base64,")
    Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1]))).verify()


def test_bad_input_one_line_errors(workdir, gallery_index, image_tree, tmp_path, capsys):
  query = str(sorted((image_tree / "XR").rglob("*.png"))[0])
  base = ["search", f"--workdir={workdir}", "--query", query]
  raw = open(gallery_index, "rb").read()
  truncated = tmp_path / "truncated.dnhidx"
  truncated.write_bytes(raw[:len(raw) // 2])
  corrupt = tmp_path / "corrupt.dnhidx"
  corrupt.write_bytes(raw[:400] + bytes([raw[400] ^ 0xFF]) + raw[401:])
  other = GalleryIndex.load(gallery_index)
  other.fingerprints["model"] = "f" * 64
  other_path = other.save(str(tmp_path / "other.dnhidx"))
  cases = [
      ([f"--index={truncated}"], str(truncated)),
      ([f"--index={corrupt}"], str(corrupt)),
      ([f"--index={other_path}"], "another model"),
      ([f"--index={tmp_path / 'missing.dnhidx'}"], "--index="),
      ([f"--index={gallery_index}", "--preference=organ>colour"], "unknown characteristic 'colour'"),
      ([f"--index={gallery_index}", "--preference=organ=x"], "non-negative integer"),
      ([f"--index={gallery_index}", "--k=100000"], "--k=100000"),
  ]
  for extra, expected in cases:
    rc, _, err = cli(capsys, *base, *extra)
    assert rc == 2 and expected in err and len(err.strip().splitlines()) == 1, (extra, err)
  broken = str(image_tree / "misc" / "broken.png")
  rc, _, err = cli(capsys, "search", f"--workdir={workdir}", f"--index={gallery_index}",
                   "--query", broken)
  assert rc == 2 and f"--query={broken}" in err and len(err.strip().splitlines()) == 1
  flat = GalleryIndex(codes=np.ones((4, 48)), ids=np.arange(4), schema=other.schema,
                      labels={k: v[:4] for k, v in other.labels.items()})
  with pytest.raises(ValueError, match="flat.*expected 'all'"):
    search_lib.search(flat, np.ones((1, 48)), "organ", 2)
  assert search_lib.search(flat, np.ones((1, 48)), "all", 2).distances.tolist() == [[0, 0]]
  assert open(gallery_index, "rb").read() == raw  # never touched by failed commands
  assert not [p for p in os.listdir(os.path.dirname(gallery_index)) if p.endswith(".tmp")]


def test_export_faiss_equals_search(gallery_index, retriever, splits, tmp_path, capsys):
  faiss = pytest.importorskip("faiss")
  out = str(tmp_path / "gallery.faiss")
  rc, stdout, err = cli(capsys, "export-faiss", f"--index={gallery_index}", f"--out={out}")
  assert rc == 0 and "IndexBinaryFlat" in stdout, err
  ix = GalleryIndex.load(gallery_index)
  images = splits.data["query"].images[:10]
  codes = retriever.encode(images)
  d_f, ids_f = faiss.read_index_binary(out).search(pack_codes(codes).view(np.uint8), 20)
  res = search_lib.search(ix, codes, "all", 20)
  np.testing.assert_array_equal(d_f, res.distances)
  np.testing.assert_array_equal(ids_f, res.ids)


# ----------------------------------------------------------------------------- run report

def test_run_report_written_at_end_of_run(workdir):
  """train_and_evaluate wrote report.html; its numbers equal the trainer's results."""
  page = open(os.path.join(workdir, "report.html"), encoding="utf-8").read()
  assert page.startswith("<!DOCTYPE html>") and "results.json" in page
  sources = re.findall(r"<img src='([^']+)'", page)
  expected = {"pr_radius.png", "pr_rank.png", "metrics_at_k.png", "distances.png",
              "held_out.png"} | {f"grid_{p}.png" for p in ("all", "modality", "organ", "disease")}
  assert set(sources) == expected
  for name in sources:  # every image the page references exists and is a real figure
    path = os.path.join(workdir, name)
    assert os.path.getsize(path) > 10_000, name
    with Image.open(path) as im:
      assert im.format == "PNG" and im.width >= 500 and len(im.convert("L").getcolors(2**16)) > 20
  numbers = json.load(open(os.path.join(workdir, "report.json")))
  results = json.load(open(os.path.join(workdir, "results.json")))
  ks = numbers["ks"]
  for spec, prefix in (("all", "test/"), ("organ", "test/organ/"), ("modality", "test/modality/")):
    for metric in ("mAP", "nDCG"):
      got = numbers["preferences"][spec][metric][ks.index(10)]
      assert got == pytest.approx(results[f"{prefix}{metric}@10"], abs=1e-9), (spec, metric)
  held = numbers["groups"]["all"]["held-out"]["mAP"][ks.index(10)]
  assert held == pytest.approx(results["test/held_out/mAP@10"], abs=1e-9)


def test_report_command_errors(tmp_path, capsys):
  from dnh_jax.report import __main__ as report_main  # pylint: disable=g-import-not-at-top
  assert report_main.main([f"--workdir={tmp_path / 'none'}"]) == 2
  err = capsys.readouterr().err
  assert "does not exist" in err and len(err.strip().splitlines()) == 1
