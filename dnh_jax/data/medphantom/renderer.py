"""MedPhantom: a deterministic procedural renderer of medical-looking images.

Every image is (modality, organ, disease): the organ is an anatomy template with random
shape, size, position and rotation, drawn as a map of tissues (`tissues`); the
disease adds its sign as lesion tissues or changes of the anatomy; the modality is the
image formation applied to that map (`modalities`, `projection`,
`chest`). So any combination renders - breast MRI, brain CT, chest ultrasound -
and a sign adapts to the modality through the physics it is made of.

    image = render("US", "breast", "malignant", size=64, seed=7)       # uint8[64, 64, 1]
    image, masks = render("MRI", "brain", "glioma", seed=1, return_masks=True)
    findings = sample_chest_findings(np.random.default_rng(0))
    image = render_chest_multilabel(findings, seed=3)

Contact sheet (look at it; `sheet.py`):
    python -m dnh_jax.data.medphantom --sheet /tmp/sheet.png [--combinations all] [--multilabel]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dnh_jax.data import schema
from dnh_jax.data.medphantom import modalities as M
from dnh_jax.data.medphantom import slices
from dnh_jax.data.medphantom.chest import chest_radiograph, sample_chest_findings
from dnh_jax.data.medphantom.core import Difficulty, as_difficulty
from dnh_jax.data.medphantom.oct import oct_grid, oct_scene
from dnh_jax.data.medphantom.paint import paint
from dnh_jax.data.medphantom.projection import PROJECTIONS, radiograph

__all__ = ["Difficulty", "render", "render_chest_multilabel", "sample_chest_findings",
           "MIN_SIZE", "MAX_SIZE", "is_normal", "combinations"]

MIN_SIZE, MAX_SIZE = 28, 224
_ATTEMPTS = 8
_SLICE_FORMATION = {"CT": M.form_ct, "MRI": M.form_mri}
# Single-label chest radiograph signs (chest.py names).
_XR_CHEST_SIGNS = {"covid": ("covid",), "pneumonia": ("lobar",), "chest_normal": ()}


def is_normal(disease: str) -> bool:
  """True for the "<organ>_normal" diseases, which have no lesion."""
  return disease.endswith("_normal")


def _check_size(size) -> int:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (
      MIN_SIZE <= size <= MAX_SIZE):
    raise ValueError(f"size={size!r}: expected an integer in [{MIN_SIZE}, {MAX_SIZE}]")
  return int(size)


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r}: expected a non-negative integer")
  return int(seed)


def _check_combination(modality: str, organ: str, disease: str):
  if modality not in schema.MODALITIES:
    raise ValueError(f"Unknown modality {modality!r}; expected one of {list(schema.MODALITIES)}")
  if organ not in schema.ORGANS:
    raise ValueError(f"Unknown organ {organ!r}; expected one of {list(schema.ORGANS)}")
  valid = schema.DISEASES_BY_ORGAN[organ]
  if disease not in valid:
    raise ValueError(f"disease {disease!r} is not a disease of organ {organ!r}; expected "
                     f"one of {list(valid)}")


def _to_uint8(img: np.ndarray) -> np.ndarray:
  return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[..., None]


def _render_once(modality, organ, disease, size, rng, diff: Difficulty, want_organ):
  """float32 image [size, size] in [0, 1], lesion mask, organ mask (or None)."""
  var = diff.anatomy_variation
  if modality == "XR":
    if organ == "chest":
      v = M.posed_grid(rng, size, var, center=(0.0, -0.02), zoom=1.0)
      path, masks, lungs = chest_radiograph(v, rng, var, diff, _XR_CHEST_SIGNS[disease])
      lesion = np.zeros((size, size), bool)
      for m in masks.values():
        lesion |= m
      return radiograph(path, rng, diff, 1.0, v.noise), lesion, lungs
    template, p0, zoom, center = PROJECTIONS[organ]
    v = M.posed_grid(rng, size, var, center=center, zoom=zoom)
    path, lesion, organ_mask = template(v.X, v.Y, rng, var, disease, diff, 1.6 * v.px)
    return radiograph(path, rng, diff, p0, v.noise), lesion, organ_mask
  if modality == "OCT":
    view = oct_grid(rng, size, var)
    scene = oct_scene(organ, rng, var, disease, diff.lesion_size, 1.6 * view.px)
    painted = paint(scene, view, want_organ)
    return M.form_oct(painted, scene.info, rng, diff), painted.lesion, painted.organ
  template = slices.SLICE_TEMPLATES[organ]
  if modality == "US":
    min_r = 1.6 * slices.US_DEPTH[organ] / size
    scene = template(rng, var, disease, diff.lesion_size, min_r, modality)
    target_r = max((getattr(p.shape, "r", 0.05) for p in scene.disease
                    if hasattr(p, "shape")), default=0.05)
    view = M.fan_view(scene.info, rng, size, var, min(target_r, 0.3))
    painted = paint(scene, view, want_organ)
    polar = M.form_us(painted, scene.info, rng, diff)
    organ_mask = M.fan_mask(painted.organ) if want_organ else None
    return M.fan_convert(polar), M.fan_mask(painted.lesion), organ_mask
  scene = template(rng, var, disease, diff.lesion_size, 1.6 * 2.0 / size, modality)
  center, zoom = scene.info.get("view", ((0.0, 0.0), 1.0))
  view = M.posed_grid(rng, size, var, center=center, zoom=zoom)
  painted = paint(scene, view, want_organ)
  img = _SLICE_FORMATION[modality](painted, scene.info, rng, diff)
  return img, painted.lesion, painted.organ


def render(modality: str, organ: str, disease: str, *, size: int = 64, seed: int,
           difficulty: "float | Difficulty" = 1.0, return_masks: bool = False):
  """Renders one MedPhantom image.

  Args:
    modality: one of `schema.MODALITIES` ("CT", "MRI", "XR", "US", "OCT").
    organ: one of `schema.ORGANS`.
    disease: a disease of that organ (`schema.DISEASES_BY_ORGAN[organ]`); "<organ>_normal"
      diseases render no lesion. Any (modality, organ, disease) is valid, published or not.
    size: output height and width, 28..224.
    seed: non-negative integer; the image is a pure function of all arguments.
    difficulty: a scalar (`Difficulty.from_scalar`; 1.0 = default) or a `Difficulty`.
    return_masks: also return {"lesion": bool[size, size], "organ": bool[size, size]};
      the lesion mask is non-empty iff the disease is not a normal one.

  Returns:
    uint8[size, size, 1], or (image, masks) with return_masks.
  """
  _check_combination(modality, organ, disease)
  size, seed = _check_size(size), _check_seed(seed)
  diff = as_difficulty(difficulty)
  normal = is_normal(disease)
  for attempt in range(_ATTEMPTS):
    # A lesion that fell outside the field of view is re-drawn (deterministically), so a
    # disease label always comes with a visible sign.
    rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
    img, lesion, organ_mask = _render_once(modality, organ, disease, size, rng, diff,
                                           return_masks)
    if normal or lesion.any():
      break
  else:
    raise RuntimeError(f"render({modality!r}, {organ!r}, {disease!r}, seed={seed}): no "
                       f"visible lesion after {_ATTEMPTS} attempts")
  image = _to_uint8(img)
  if not return_masks:
    return image
  return image, {"lesion": lesion, "organ": organ_mask}


def _check_findings(findings) -> tuple[str, ...]:
  if isinstance(findings, str):
    raise ValueError(f"findings={findings!r}: expected a sequence of finding names, not a "
                     f"string")
  findings = tuple(findings)
  for f in findings:
    if f not in schema.CHEST_FINDINGS:
      raise ValueError(f"Unknown chest finding {f!r}; expected names from "
                       f"{list(schema.CHEST_FINDINGS)}")
  if len(set(findings)) != len(findings):
    raise ValueError(f"findings={findings!r}: duplicate names")
  return tuple(f for f in schema.CHEST_FINDINGS if f in findings)


def render_chest_multilabel(findings: Sequence[str], *, size: int = 64, seed: int,
                            difficulty: "float | Difficulty" = 1.0,
                            return_masks: bool = False):
  """Renders a PA chest radiograph with the given ChestX-ray14 findings.

  Args:
    findings: names from `schema.CHEST_FINDINGS` (empty = no finding); order is ignored.
    size, seed, difficulty: as in `render`.
    return_masks: also return {finding: bool[size, size]} for all 13 findings; a
      finding's mask is non-empty iff it is in `findings`.

  Returns:
    uint8[size, size, 1], or (image, masks) with return_masks.
  """
  signs = _check_findings(findings)
  size, seed = _check_size(size), _check_seed(seed)
  diff = as_difficulty(difficulty)
  rng = np.random.default_rng([seed, 14])  # a stream apart from render("XR", "chest", ...)
  v = M.posed_grid(rng, size, diff.anatomy_variation, center=(0.0, -0.02))
  path, masks, _ = chest_radiograph(v, rng, diff.anatomy_variation, diff, signs)
  image = _to_uint8(radiograph(path, rng, diff, 1.0, v.noise))
  if not return_masks:
    return image
  empty = np.zeros((size, size), bool)
  return image, {f: masks.get(f, empty) for f in schema.CHEST_FINDINGS}


# ---------------------------------------------------------------------------------------
# Named sets of combinations (the contact sheet's --combinations).

_COMBINATION_SETS = ("published", "all", "unpublished")


def combinations(which: str) -> list[tuple[str, str, str]]:
  """The (modality, organ, disease) combinations of a named set."""
  if which not in _COMBINATION_SETS:
    raise ValueError(f"--combinations={which!r}: expected one of {list(_COMBINATION_SETS)}")
  every = [(m, o, d) for o in schema.ORGANS for m in schema.MODALITIES
           for d in schema.DISEASES_BY_ORGAN[o]]
  if which == "published":
    return list(schema.PUBLISHED_COMBINATIONS)
  if which == "unpublished":
    return [c for c in every if c not in schema.PUBLISHED_COMBINATIONS]
  return every
