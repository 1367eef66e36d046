"""Tests of the MedPhantom renderer: API contract, determinism, label fidelity, modality
signatures, the chest finding sampler and the contact-sheet command line."""

import os

import numpy as np
import pytest
from PIL import Image

from dnh_jax.data.medphantom import renderer as phantom
from dnh_jax.data.medphantom import sheet
from dnh_jax.data.medphantom import paint as C
from dnh_jax.data.medphantom import modalities as M
from dnh_jax.data.medphantom import oct
from dnh_jax.data.medphantom import slices
from dnh_jax.data import schema
from dnh_jax.data.medphantom.core import F32

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

ALL = [(m, o, d) for o in schema.ORGANS for m in schema.MODALITIES
       for d in schema.DISEASES_BY_ORGAN[o]]


def test_combination_sets():
  assert len(ALL) == 75
  assert phantom.combinations("published") == list(schema.PUBLISHED_COMBINATIONS)
  unpublished = phantom.combinations("unpublished")
  assert len(unpublished) == 75 - 15 and ("MRI", "breast", "benign") in unpublished
  assert sorted(phantom.combinations("all")) == sorted(ALL)


@pytest.mark.parametrize("size", [28, 64, 224])
def test_shape_and_dtype(size):
  for m in schema.MODALITIES:
    img = phantom.render(m, "breast", "malignant", size=size, seed=3)
    assert img.shape == (size, size, 1) and img.dtype == np.uint8
  img, masks = phantom.render_chest_multilabel(("effusion",), size=size, seed=1,
                                               return_masks=True)
  assert img.shape == (size, size, 1) and img.dtype == np.uint8
  assert set(masks) == set(schema.CHEST_FINDINGS)
  assert all(v.shape == (size, size) and v.dtype == bool for v in masks.values())


def test_every_combination_renders_with_faithful_masks():
  """Every modality x organ x disease, published or not: a lesion iff not normal."""
  for m, o, d in ALL:
    for seed in (0, 1):
      img, masks = phantom.render(m, o, d, size=32, seed=seed, return_masks=True)
      assert img.shape == (32, 32, 1) and img.dtype == np.uint8
      assert masks["lesion"].dtype == bool and masks["organ"].dtype == bool
      assert masks["lesion"].any() == (not phantom.is_normal(d)), (m, o, d, seed)
      assert masks["organ"].any(), (m, o, d, seed)
      assert img.std() > 5, (m, o, d, seed)  # not a blank image


@pytest.mark.parametrize("combo", [c for c in schema.PUBLISHED_COMBINATIONS
                                   if not phantom.is_normal(c[2])])
def test_lesion_present_over_many_seeds_at_smallest_size(combo):
  for seed in range(12):
    _, masks = phantom.render(*combo, size=28, seed=seed, difficulty=2.0, return_masks=True)
    assert masks["lesion"].any(), (combo, seed)


def test_normal_images_have_no_lesion():
  for m in schema.MODALITIES:
    for o in schema.ORGANS:
      normal = [d for d in schema.DISEASES_BY_ORGAN[o] if phantom.is_normal(d)]
      for d in normal:
        for seed in range(3):
          _, masks = phantom.render(m, o, d, size=32, seed=seed, return_masks=True)
          assert not masks["lesion"].any(), (m, o, d, seed)


def test_lesion_is_visible_where_the_mask_says():
  """Fading the lesion (lesion_contrast 1 -> 0.05) changes the image, mostly near the mask."""
  faint = phantom.Difficulty(lesion_contrast=0.05)
  for m, o, d in ALL:
    if phantom.is_normal(d):
      continue
    img, masks = phantom.render(m, o, d, size=48, seed=5, return_masks=True)
    ref = phantom.render(m, o, d, size=48, seed=5, difficulty=faint)
    diff = np.abs(img.astype(float) - ref.astype(float))[..., 0]
    lesion = masks["lesion"]
    assert diff[lesion].max() >= 12, (m, o, d)
    if m != "US":  # ultrasound signs (shadows, B-lines) reach beyond the lesion by nature
      assert diff[lesion].mean() > 2 * diff[~lesion].mean(), (m, o, d)


def test_determinism():
  for m in schema.MODALITIES:
    a = phantom.render(m, "chest", "covid", size=40, seed=11)
    b = phantom.render(m, "chest", "covid", size=40, seed=11)
    c = phantom.render(m, "chest", "covid", size=40, seed=12)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 2, m
  a = phantom.render_chest_multilabel(("edema", "effusion"), size=40, seed=4)
  b = phantom.render_chest_multilabel(["effusion", "edema"], size=40, seed=4)  # order-free
  c = phantom.render_chest_multilabel(("edema", "effusion"), size=40, seed=5)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a.astype(int) - c.astype(int)).mean() > 2
  rng = np.random.default_rng(0)
  assert [phantom.sample_chest_findings(rng) for _ in range(20)] == [
      phantom.sample_chest_findings(r) for r in [np.random.default_rng(0)] for _ in range(20)]


def test_chest_multilabel_masks_follow_findings():
  for f in schema.CHEST_FINDINGS:
    for seed in range(3):
      _, masks = phantom.render_chest_multilabel((f,), size=28, seed=seed, return_masks=True)
      assert masks[f].any(), (f, seed)
      assert not any(masks[g].any() for g in schema.CHEST_FINDINGS if g != f), (f, seed)
  rng = np.random.default_rng(7)
  for seed in range(25):
    findings = phantom.sample_chest_findings(rng)
    _, masks = phantom.render_chest_multilabel(findings, size=32, seed=seed, return_masks=True)
    for f in schema.CHEST_FINDINGS:
      assert masks[f].any() == (f in findings), (findings, f)


def test_chest_findings_are_distinct_signs():
  """Each finding changes the radiograph (same anatomy seed, finding added)."""
  base = phantom.render_chest_multilabel((), size=48, seed=2).astype(float)
  for f in schema.CHEST_FINDINGS:
    img, masks = phantom.render_chest_multilabel((f,), size=48, seed=2, return_masks=True)
    diff = np.abs(img.astype(float) - base)[..., 0]
    assert diff[masks[f]].mean() > 4, f


def test_finding_prevalence_and_cooccurrence():
  rng = np.random.default_rng(0)
  n = 6000
  hot = np.zeros((n, len(schema.CHEST_FINDINGS)), bool)
  for i in range(n):
    for f in phantom.sample_chest_findings(rng):
      hot[i, schema.CHEST_FINDINGS.index(f)] = True
  idx = {f: i for i, f in enumerate(schema.CHEST_FINDINGS)}
  normal = ~hot.any(axis=1)
  assert 0.45 < normal.mean() < 0.6
  prev = hot[~normal].mean(axis=0)
  assert prev.min() > 0.01  # every finding occurs
  assert prev.argmax() == idx["infiltration"]  # the most frequent, as in ChestX-ray14
  assert 1.2 < hot[~normal].sum(axis=1).mean() < 2.2

  def lift(a, b):
    return hot[hot[:, idx[b]], idx[a]].mean() / hot[:, idx[a]].mean()

  assert lift("effusion", "edema") > 1.8
  assert lift("effusion", "atelectasis") > 1.5
  assert lift("edema", "cardiomegaly") > 3.0
  assert lift("mass", "nodule") > 1.5


def _features(img):
  """Generic image statistics (nothing modality-specific): histogram, moments, gradient
  and Laplacian energy, corner / top / bottom brightness, fraction of black pixels."""
  x = img[..., 0].astype(np.float64) / 255
  h = x.shape[0]
  c = max(h // 8, 2)
  hist = np.histogram(x, bins=8, range=(0, 1))[0] / x.size
  lap = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:])
  dx, dy = np.abs(np.diff(x, axis=1)).mean(), np.abs(np.diff(x, axis=0)).mean()
  corners = np.concatenate([x[:c, :c].ravel(), x[:c, -c:].ravel()])
  return np.concatenate([hist, [x.mean(), x.std(), lap.mean(), dx, dy, dx / (dy + 1e-3),
                                corners.mean(), x[:h // 4].mean(), x[-h // 4:].mean(),
                                (x < 0.03).mean()]])


def test_modalities_distinguishable_by_simple_statistics():
  """Classifiers on generic image statistics, fitted on half of the (modality, organ,
  disease) combinations and scored on the other half with other seeds, tell the five
  modalities apart: nearest centroid (one centroid per modality, although each mixes five
  organs) well above chance (0.2), nearest neighbour almost perfectly."""
  def data(combos, seeds):
    feats, labels = [], []
    for m, o, d in combos:
      for s in seeds:
        feats.append(_features(phantom.render(m, o, d, size=32, seed=s)))
        labels.append(schema.MODALITIES.index(m))
    return np.array(feats), np.array(labels)

  xtr, ytr = data(ALL[::2], range(100, 104))
  xte, yte = data(ALL[1::2], range(200, 202))
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  centroids = np.stack([xtr[ytr == k].mean(0) for k in range(len(schema.MODALITIES))])
  centroid_pred = np.argmin(((xte[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (centroid_pred == yte).mean() > 0.6
  neighbour_pred = ytr[np.argmin(((xte[:, None] - xtr[None]) ** 2).sum(-1), axis=1)]
  assert (neighbour_pred == yte).mean() > 0.9


def test_ultrasound_shadowing_and_enhancement():
  """Malignant breast masses cast acoustic shadows; benign ones do not."""
  faint = phantom.Difficulty(lesion_contrast=0.05)

  def below_ratio(disease, seed):
    img, masks = phantom.render("US", "breast", disease, size=64, seed=seed, return_masks=True)
    ref = phantom.render("US", "breast", disease, size=64, seed=seed, difficulty=faint)
    les = masks["lesion"]
    rows = np.arange(64)[:, None]
    bottom = np.where(les.any(0), 63 - np.argmax(les[::-1], axis=0), 64)
    below = (rows > bottom[None, :] + 2) & les.any(0)[None, :] & (ref[..., 0] > 0)
    return img[..., 0][below].mean() / max(ref[..., 0][below].mean(), 1.0)

  malignant = np.mean([below_ratio("malignant", s) for s in range(6)])
  benign = np.mean([below_ratio("benign", s) for s in range(6)])
  assert malignant < 0.75, malignant
  assert benign > 0.95, benign


def test_difficulty_knobs():
  assert phantom.Difficulty.from_scalar(1.0) == phantom.Difficulty()
  easy, hard = phantom.Difficulty.from_scalar(0.0), phantom.Difficulty.from_scalar(2.0)
  assert easy.noise == 0 and hard.noise == 2
  assert easy.lesion_contrast > 1 > hard.lesion_contrast
  assert easy.lesion_size > 1 > hard.lesion_size
  for bad in (-0.1, float("nan"), 4.0, "1"):
    with pytest.raises(ValueError, match="difficulty"):
      phantom.Difficulty.from_scalar(bad)
  with pytest.raises(ValueError, match="lesion_contrast"):
    phantom.Difficulty(lesion_contrast=0.0)

  def background_noise(difficulty):
    img = phantom.render("MRI", "brain", "glioma", size=64, seed=0, difficulty=difficulty)
    return img[:6, :6].astype(float).std()

  assert background_noise(2.0) > 1.5 * background_noise(0.3)
  def seed_to_seed(difficulty):
    a, b = (phantom.render("CT", "abdomen", "abdomen_normal", size=48, seed=s,
                           difficulty=difficulty) for s in (1, 2))
    return np.abs(a.astype(int) - b.astype(int)).mean()

  quiet = phantom.Difficulty(noise=0.0, anatomy_variation=0.0)
  assert seed_to_seed(quiet) < 0.3 * seed_to_seed(1.0)  # pose, shape, window fixed

  def lesion_area(difficulty):
    return np.mean([phantom.render("MRI", "brain", "meningioma", size=64, seed=s,
                                   difficulty=difficulty, return_masks=True)[1]["lesion"].sum()
                    for s in range(6)])

  assert lesion_area(0.0) > lesion_area(2.5)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="modality 'PET'"):
    phantom.render("PET", "brain", "glioma", seed=0)
  with pytest.raises(ValueError, match="organ 'liver'"):
    phantom.render("CT", "liver", "liver_lesion", seed=0)
  with pytest.raises(ValueError, match="not a disease of organ 'brain'"):
    phantom.render("CT", "brain", "covid", seed=0)
  for size in (27, 225, 64.0, True):
    with pytest.raises(ValueError, match="size"):
      phantom.render("CT", "brain", "glioma", size=size, seed=0)
  for seed in (-1, 1.5, None):
    with pytest.raises(ValueError, match="seed"):
      phantom.render("CT", "brain", "glioma", seed=seed)
  with pytest.raises(ValueError, match="difficulty"):
    phantom.render("CT", "brain", "glioma", seed=0, difficulty="hard")
  with pytest.raises(ValueError, match="not a string"):
    phantom.render_chest_multilabel("effusion", seed=0)
  with pytest.raises(ValueError, match="Unknown chest finding 'hernia'"):
    phantom.render_chest_multilabel(("hernia",), seed=0)
  with pytest.raises(ValueError, match="duplicate"):
    phantom.render_chest_multilabel(("mass", "mass"), seed=0)
  with pytest.raises(ValueError, match="combinations"):
    phantom.combinations("some")


def test_windowed_painting_equals_whole_image_painting():
  """Bounding-box windows are only a speed-up: same labels as evaluating everywhere."""
  diseases = {"brain": "meningioma", "breast": "malignant", "chest": "pneumonia",
              "retina": "cnv", "abdomen": "liver_lesion"}
  for seed in range(4):
    for organ, template in slices.SLICE_TEMPLATES.items():
      scene = template(np.random.default_rng(seed), 1.0, diseases[organ], 1.0, 0.05, "US")
      scene.anatomy = [p for p in scene.anatomy if isinstance(p, C.Prim)]
      scene.disease = [p for p in scene.disease if isinstance(p, C.Prim)]
      views = [M.posed_grid(np.random.default_rng(seed), 48, 1.0),
               M.fan_view(scene.info, np.random.default_rng(seed), 48, 1.0, 0.1),
               oct.oct_grid(np.random.default_rng(seed), 48, 1.0)]
      for view in views:
        fast = C.paint(scene, view)
        slow = C.paint(scene, C.View(view.X, view.Y, view.px, np.random.default_rng(0)))
        assert (fast.labels != slow.labels).sum() <= 2, (organ, seed)
        assert (fast.lesion != slow.lesion).sum() <= 2, (organ, seed)


def test_contact_sheet_cli(tmp_path):
  out = tmp_path / "sheet.png"
  assert sheet.main(["--sheet", str(out), "--size", "28", "--per-combination", "2"]) == 0
  img = Image.open(out)
  assert img.mode == "L" and img.size[0] > 200 and img.size[1] > 100
  assert os.listdir(tmp_path) == ["sheet.png"]  # no temporary file left behind
  out2 = tmp_path / "multi.png"
  assert sheet.main(["--sheet", str(out2), "--size", "28", "--per-combination", "1",
                       "--multilabel"]) == 0
  assert Image.open(out2).size[1] > 100
  with pytest.raises(SystemExit):
    sheet.main(["--sheet", str(out), "--combinations", "some"])
  with pytest.raises(SystemExit):
    sheet.main(["--sheet", str(tmp_path / "missing" / "x.png"), "--size", "28",
                  "--per-combination", "1"])
  with pytest.raises(SystemExit):
    sheet.main(["--sheet", str(out), "--size", "300"])


def test_layers_paint_like_stacked_below_prims():
  from dnh_jax.data.medphantom.core import Below
  curves = [lambda x, k=k: F32(-0.6 + 0.3 * k) + F32(0.2 * (k % 2)) * np.sin(3 * x)
            for k in range(5)]
  tissues = (3, 5, 7, 9, 11)
  view = oct.oct_grid(np.random.default_rng(0), 40, 1.0)
  layered = C.Scene([C.Layers(lambda x: [c(x) for c in curves], tissues)], [], [], 0)
  stacked = C.Scene([C.Prim(Below(c), t) for c, t in zip(curves, tissues)], [], [], 0)
  a, b = C.paint(layered, view).labels, C.paint(stacked, view).labels
  np.testing.assert_array_equal(a, b)
  assert len(np.unique(a)) == 6  # the curves cross, so the paint order matters
