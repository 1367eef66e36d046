"""Chest radiograph (PA) template, its findings and their co-occurrence.

The thorax is built as a projection (see `projection`): a soft-tissue body, ribs,
clavicles and spine, two lungs whose air path makes them dark (cut below by domed
hemidiaphragms, so the costophrenic angles are sharp), a heart shadow that displaces lung,
hila and vascular markings that fade toward the periphery.

Every finding is an explicit change of that model: opacities replace lung air (ground glass
partly, consolidation almost fully, with air bronchograms), fluid fills the base under a
meniscus, a pneumothorax is air without markings outside a visible pleural line,
emphysema enlarges and darkens the lungs and flattens the diaphragm, cardiomegaly widens
the heart, atelectasis is a plate of collapsed lung that pulls the diaphragm up, fibrosis a
reticular net, pleural thickening a band along the chest wall. Each sign also yields the
mask of where it is, so label fidelity can be checked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from dnh_jax.data import schema
from dnh_jax.data.medphantom.core import (Blob, Capsule, Difficulty, Ellipse, F32, HalfPlane,
                                          circle, clip01, cpow, rand_harmonics, smoothstep)
from dnh_jax.data.medphantom.paint import View, add_dome, dome, field

_PI = math.pi

# Co-occurrence model: a "no finding" image with probability _P_NORMAL, else one latent
# syndrome whose findings are drawn independently (at least one). Probabilities are set so
# the marginals approach NIH ChestX-ray14 (Wang et al., CVPR 2017): among abnormal images
# infiltration ~38 %, effusion ~26 %, atelectasis ~22 %, nodule ~12 %, mass ~11 %,
# pneumothorax ~10 %, consolidation ~9 %, pleural thickening ~6 %, cardiomegaly ~5 %,
# emphysema ~5 %, edema ~5 %, fibrosis ~3 %, pneumonia ~3 %; ~1.6 findings per abnormal
# image, and effusion travels with edema, cardiomegaly and atelectasis.
_P_NORMAL = 0.53
_SYNDROMES = (  # (weight, {finding: probability})
    (0.24, {"infiltration": 0.75, "consolidation": 0.25, "pneumonia": 0.12,
            "effusion": 0.2, "atelectasis": 0.2}),
    (0.08, {"cardiomegaly": 0.5, "edema": 0.5, "effusion": 0.7, "atelectasis": 0.3,
            "infiltration": 0.3}),
    (0.16, {"effusion": 0.8, "atelectasis": 0.5, "infiltration": 0.3,
            "pleural_thickening": 0.1, "consolidation": 0.1}),
    (0.17, {"nodule": 0.6, "mass": 0.55, "infiltration": 0.2, "effusion": 0.12,
            "atelectasis": 0.12, "pleural_thickening": 0.1}),
    (0.05, {"emphysema": 0.75, "pneumothorax": 0.2, "infiltration": 0.2, "nodule": 0.1}),
    (0.05, {"fibrosis": 0.6, "pleural_thickening": 0.4, "infiltration": 0.3, "nodule": 0.1}),
    (0.08, {"pneumothorax": 0.95, "emphysema": 0.1, "atelectasis": 0.1, "effusion": 0.1}),
    (0.17, {"infiltration": 0.55, "atelectasis": 0.35, "effusion": 0.1, "nodule": 0.1,
            "pleural_thickening": 0.08, "cardiomegaly": 0.06, "edema": 0.03}),
)


def sample_chest_findings(rng: np.random.Generator) -> tuple[str, ...]:
  """A realistic set of ChestX-ray14 findings (empty tuple = "no finding").

  Returns the findings in `schema.CHEST_FINDINGS` order.
  """
  if rng.random() < _P_NORMAL:
    return ()
  weights = np.array([w for w, _ in _SYNDROMES])
  probs = _SYNDROMES[int(rng.choice(len(_SYNDROMES), p=weights / weights.sum()))][1]
  names = list(probs)
  draws = rng.random(len(names))
  found = {n for n, u in zip(names, draws) if u < probs[n]}
  if not found:
    found = {max(names, key=probs.get)}
  return tuple(f for f in schema.CHEST_FINDINGS if f in found)


class _Lung(Ellipse):
  """A lung field: an ellipse that widens toward the base (taper > 0)."""

  __slots__ = ("taper",)

  def __init__(self, cx, cy, a, b, taper=0.3):
    super().__init__(cx, cy, a, b)
    self.taper = taper

  def f(self, X, Y):
    dy = (Y - F32(self.cy)) * F32(1 / self.b)
    width = F32(self.a) * np.maximum(F32(1.0) + F32(self.taper) * dy, F32(0.3))
    return np.square((X - F32(self.cx)) / width) + np.square(dy)

  def bbox(self):
    hx = self.a * (1 + self.taper)
    return self.cx - hx, self.cx + hx, self.cy - self.b, self.cy + self.b

  def scaled(self, k, kb=None):
    return _Lung(self.cx, self.cy, self.a * k, self.b * (k if kb is None else kb), self.taper)

  def point(self, phi, k=1.0):
    dy = k * math.sin(phi)
    return (self.cx + k * self.a * max(1 + self.taper * dy, 0.3) * math.cos(phi),
            self.cy + self.b * dy)


class _Thorax:
  """Geometry of one chest: lungs, hemidiaphragms, heart (changed by some findings)."""

  def __init__(self, rng, var, findings, c):
    J = lambda s: float(s * var * rng.standard_normal())
    lx, ly = 0.38 + J(0.015), -0.12 + J(0.02)
    la, lb = 0.27 + J(0.015), 0.7 + J(0.02)
    self.dia_top = [0.36 + J(0.02), 0.4 + J(0.02)]     # image left = patient right
    self.dia_k = [1.0, 1.0]
    hx, ha, hb = 0.1 + J(0.015), 0.31 + J(0.015), 0.23 + J(0.01)
    if "emphysema" in findings:
      lb *= 1 + 0.1 * c
      la *= 1 + 0.06 * c
      self.dia_top = [t + 0.13 * c for t in self.dia_top]
      self.dia_k = [1 - 0.75 * c] * 2
      ha *= 0.88
    if "fibrosis" in findings:
      lb *= 1 - 0.05 * c
    if "cardiomegaly" in findings:
      ha *= 1 + c * rng.uniform(0.35, 0.55)
      hb *= 1 + c * rng.uniform(0.12, 0.25)
      hx += 0.04 * c
    self.atel_side = int(rng.integers(2))
    if "atelectasis" in findings:
      self.dia_top[self.atel_side] -= 0.07 * c
      hx += (0.03 if self.atel_side else -0.03) * c
    self.lungs = [_Lung(-lx, ly, la, lb), _Lung(lx, ly, la * 0.97, lb)]
    self.heart = Ellipse(hx, 0.2 + J(0.015), ha, hb, 0.3)
    self.ribs = (0.9 + J(0.03), 0.13 + J(0.005), 0.33 + J(0.03))

  def diaphragm(self, i, X):
    lung = self.lungs[i]
    return F32(self.dia_top[i]) + F32(self.dia_k[i]) * np.square(X - F32(lung.cx))


def _soft(f, edge=0.5):
  return smoothstep((F32(1.0) - f) * F32(1.0 / edge))


def _bronchograms(noise, px):
  n = noise(max(0.03 / px, 0.6))
  return np.exp(-np.square(n * F32(1 / 0.25)))


def _lung_point(lung, rng, rmin=0.1, rmax=0.6, ymin=-0.6, ymax=0.6):
  """A random point inside a lung (fraction of its radii), restricted in height."""
  for _ in range(20):
    phi, rho = rng.uniform(0, 2 * _PI), rng.uniform(rmin, rmax)
    x, y = lung.point(phi, rho)
    if ymin <= (y - lung.cy) / lung.b <= ymax:
      return x, y
  return lung.cx, lung.cy


@dataclasses.dataclass(frozen=True)
class _Image:
  """What every finding draws on: the grid, the image's generator and thorax, the
  lesion contrast and size, and the fields shared by the image's findings."""

  X: np.ndarray
  Y: np.ndarray
  rng: np.random.Generator
  th: "_Thorax"
  c: float                 # lesion contrast
  lsz: float               # lesion size scale
  min_r: float             # smallest radius that stays visible (1.6 pixels)
  px: float                # pixel size
  lung_in: np.ndarray      # bool: inside a lung, above the diaphragm
  F: Callable              # shape -> its field on the grid
  patchy: Callable         # () -> the patchiness field shared by airspace opacities
  noise: Callable          # scale -> a noise field

  def R(self, lo: float, hi: float) -> float:  # pylint: disable=invalid-name
    """A random radius in [lo, hi] x lesion size, at least min_r."""
    return max(self.rng.uniform(lo, hi) * self.lsz, self.min_r)


_ZERO = F32(0.0)

# Each finding: (image, name, side) -> (opacity, extra path, mask) fields; opacity
# replaces lung air. `side` (0 right, 1 left) is drawn for every finding, first.


def _atelectasis(k: _Image, name: str, side: int):
  del name, side
  i = k.th.atel_side
  lung = k.th.lungs[i]
  y = k.th.dia_top[i] - k.rng.uniform(0.06, 0.2)
  x0 = lung.cx - lung.a * k.rng.uniform(0.3, 0.6)
  x1 = lung.cx + lung.a * k.rng.uniform(0.3, 0.6)
  f = k.F(Capsule(x0, y + k.rng.normal(0, 0.03), x1, y + k.rng.normal(0, 0.03),
                  max(k.rng.uniform(0.02, 0.035) * k.lsz, k.min_r * 0.8)))
  return F32(0.9) * _soft(f, 0.6), _ZERO, (f < 1) & k.lung_in


def _cardiomegaly(k: _Image, name: str, side: int):
  del name, side
  f = k.F(k.th.heart)
  return _ZERO, F32(0.15) * dome(f), f < 1


def _effusion(k: _Image, name: str, side: int):
  """"effusion" and "covid_effusion": fluid under a meniscus, one or both bases."""
  del name
  X, Y = k.X, k.Y
  op, mask = _ZERO, np.zeros(X.shape, bool)
  for i in ([side] if k.rng.random() < 0.6 else [0, 1]):
    lung = k.th.lungs[i]
    q = np.minimum(np.maximum((X - F32(lung.cx)) * F32((1 if i else -1) / lung.a), -1), 1)
    h = max(k.rng.uniform(0.1, 0.3) * (0.5 + 0.5 * k.c), 2.5 * k.min_r)
    q = (q + F32(1.0)) * F32(0.5)
    top = k.th.diaphragm(i, X) - F32(h) * (F32(0.35) + F32(0.65) * q * np.sqrt(q)) - F32(0.02)
    region = (Y > top) & (lung.scaled(1.05).f(X, Y) < 1)
    op = np.maximum(op, smoothstep((Y - top) * F32(1 / 0.04)) * region)
    mask |= region & (Y > top + 0.01)
  return op, F32(0.2) * op, mask


def _ground_glass(k: _Image, name: str, side: int):
  """"infiltration" (1-3 patches, one lung) and "covid" (peripheral, both lungs)."""
  rng = k.rng
  op, mask = _ZERO, np.zeros(k.X.shape, bool)
  n = int(rng.integers(1, 4)) if name == "infiltration" else int(rng.integers(2, 5))
  for j in range(n):
    i = side if name == "infiltration" else (j % 2)
    lung = k.th.lungs[i]
    if name == "covid":  # peripheral, lower and mid zones
      phi = (0.0 if i else _PI) + (-1 if i else 1) * rng.uniform(-0.4, 1.0)
      ctr, strength = lung.point(phi, rng.uniform(0.6, 0.75)), rng.uniform(0.3, 0.45)
    else:
      ctr, strength = _lung_point(lung, rng), rng.uniform(0.3, 0.5)
    f = k.F(Blob(*ctr, k.R(0.12, 0.2), rng.uniform(0.6, 1.2), rng.uniform(0, 3),
                 rand_harmonics(rng, 0.25)))
    w = _soft(f, 1.0) * F32(strength) * np.maximum(F32(1.0) + F32(0.5) * k.patchy(), 0)
    op = np.maximum(op, np.minimum(w, 1.0) * k.lung_in)
    mask |= (f < 0.6) & k.lung_in
  return op, _ZERO, mask


def _mass_or_nodules(k: _Image, name: str, side: int):
  """"mass" (one lobulated blob) or "nodule" (1-2 small round ones)."""
  rng = k.rng
  op, extra, mask = _ZERO, _ZERO, np.zeros(k.X.shape, bool)
  for j in range(1 if name == "mass" else int(rng.integers(1, 3))):
    lung = k.th.lungs[side if j == 0 else int(rng.integers(2))]
    ctr = _lung_point(lung, rng, 0.15, 0.6, -0.7, 0.45)
    if name == "mass":
      shape = Blob(*ctr, k.R(0.09, 0.14), rng.uniform(0.85, 1.2), rng.uniform(0, 3),
                   rand_harmonics(rng, 0.06, (2, 3, 5)))
    else:
      shape = circle(*ctr, k.R(0.03, 0.05))
    f = k.F(shape)
    d = dome(f)
    op = np.maximum(op, np.minimum(F32(1.4) * d, F32(0.85)))
    extra = extra + F32(0.04) * d
    mask |= f < 1
  return op, extra, mask


def _consolidation(k: _Image, name: str, side: int):
  """"pneumonia" (a patchy blob), "consolidation" and "lobar" (a lobe cut by a fissure);
  all with air bronchograms."""
  rng, lung = k.rng, k.th.lungs[side]
  lower = rng.random() < 0.65
  y_cut = lung.cy + rng.uniform(-0.15, 0.1) * lung.b
  if name == "pneumonia":
    ctr = _lung_point(lung, rng, 0.2, 0.5, 0.0 if lower else -0.6, 0.6 if lower else 0.0)
    f = k.F(Blob(*ctr, k.R(0.14, 0.22), rng.uniform(0.8, 1.2), 0.0, rand_harmonics(rng, 0.3)))
    op = _soft(f, 0.9) * F32(rng.uniform(0.55, 0.75))
    op = op * np.minimum(np.maximum(F32(1.0) + F32(0.4) * k.patchy(), 0), F32(1.5))
    mask = f < 0.6
  else:
    cut = HalfPlane(0.15 * (1 if side else -1), -1.0 if lower else 1.0,
                    -y_cut if lower else y_cut)
    f = np.maximum(lung.scaled(1.02).f(k.X, k.Y), cut.f(k.X, k.Y))
    op = _soft(f, 0.3) * F32(rng.uniform(0.8, 0.95))
    mask = f < 0.85
  op = np.minimum(op * (F32(1.0) - F32(0.45) * _bronchograms(k.noise, k.px)), 1.0)
  return op * k.lung_in, _ZERO, mask & k.lung_in


def _pneumothorax(k: _Image, name: str, side: int):
  del name
  lung, th = k.th.lungs[side], k.th
  s = 1 - k.c * k.rng.uniform(0.15, 0.3)
  shrunk = Ellipse(lung.cx - (lung.a * (1 - s)) * (0.6 if side else -0.6),
                   lung.cy + lung.b * (1 - s) * 0.5, lung.a * s, lung.b * s, 0.0)
  fs = shrunk.f(k.X, k.Y)
  region = k.lung_in & (fs >= 1) & (th.lung_f[side] < 1)
  if not region.any():
    region = k.lung_in & (th.lung_f[side] > 0.8)
  line = F32(0.12) * np.exp(-np.square((fs - F32(1.0)) * F32(12.0))) * k.lung_in
  return -F32(0.2) * region, line, region


def _edema(k: _Image, name: str, side: int):
  del name, side
  op, mask = _ZERO, np.zeros(k.X.shape, bool)
  strength = k.rng.uniform(0.35, 0.55)
  for lung in k.th.lungs:
    hx = lung.cx * 0.45
    f = k.F(Blob(hx, lung.cy + 0.15, k.R(0.25, 0.32), 0.75, 0.0, rand_harmonics(k.rng, 0.15)))
    op = np.maximum(op, _soft(f, 0.9) * F32(strength) * k.lung_in)
    mask |= (f < 0.55) & k.lung_in
  return op, _ZERO, mask


def _emphysema(k: _Image, name: str, side: int):
  del name, side
  return -F32(0.2) * k.lung_in, _ZERO, k.lung_in


def _fibrosis(k: _Image, name: str, side: int):
  del name, side
  n = k.noise(max(0.025 / k.px, 0.5))
  net = np.exp(-np.square(n * F32(1 / 0.3)))
  upper = k.rng.random() < 0.3
  region = np.zeros(k.X.shape, bool)
  for lung, f in zip(k.th.lungs, k.th.lung_f):
    zone = (k.Y - lung.cy) * F32(-1 if upper else 1) > F32(-0.1 * lung.b)
    region |= (f > 0.35) & (f < 1) & zone
  region &= k.lung_in
  return F32(0.4) * net * region, F32(0.12) * net * region, region


def _pleural_thickening(k: _Image, name: str, side: int):
  del name
  lung = k.th.lungs[side]
  t = max(k.rng.uniform(0.04, 0.07) * k.lsz, k.min_r)
  f = k.th.lung_f[side]
  band = k.lung_in & (f > (1 - t / lung.a) ** 2) & (
      (k.X - F32(lung.cx)) * F32(1 if side else -1) > F32(0.2 * lung.a))
  if not band.any():
    band = k.lung_in & (f > 0.8)
  return F32(0.85) * band, F32(0.08) * band, band


_FINDINGS = {
    "atelectasis": _atelectasis, "cardiomegaly": _cardiomegaly,
    "effusion": _effusion, "covid_effusion": _effusion,
    "infiltration": _ground_glass, "covid": _ground_glass,
    "mass": _mass_or_nodules, "nodule": _mass_or_nodules,
    "pneumonia": _consolidation, "consolidation": _consolidation, "lobar": _consolidation,
    "pneumothorax": _pneumothorax, "edema": _edema, "emphysema": _emphysema,
    "fibrosis": _fibrosis, "pleural_thickening": _pleural_thickening,
}


def _signs(name: str, k: _Image):
  """One finding -> (opacity, extra path, mask) fields; opacity replaces lung air."""
  side = int(k.rng.integers(2))
  if name not in _FINDINGS:
    raise ValueError(f"Unknown chest finding {name!r}; expected one of {schema.CHEST_FINDINGS}")
  return _FINDINGS[name](k, name, side)


def chest_radiograph(view: View, rng, var, diff: Difficulty, signs: Sequence[str]):
  """PA chest radiograph path map with the given signs.

  Returns (path float32[H, W], {sign: bool mask}, lung mask). Signs are the 13 findings
  of `schema.CHEST_FINDINGS` plus "covid" (bilateral peripheral ground glass) and "lobar"
  (lobar consolidation, the single-label pneumonia).
  """
  X, Y, px = view.X, view.Y, view.px
  c, lsz = diff.lesion_contrast, diff.lesion_size
  min_r = 1.6 * px
  th = _Thorax(rng, var, set(signs), c)
  F = lambda shape: field(view, shape)
  cache = {}

  def patchy():  # one patchiness field shared by all airspace opacities of the image
    if "n" not in cache:
      cache["n"] = view.noise(max(0.04 / px, 0.6))
    return cache["n"]

  lung_in = np.zeros(X.shape, bool)
  air = F32(0.0)
  th.lung_f = [lung.f(X, Y) for lung in th.lungs]
  for i, f in enumerate(th.lung_f):
    dia = th.diaphragm(i, X)
    lung_in |= (f < 1) & (Y < dia)
    d = dome(f)
    air = air + np.sqrt(d * np.sqrt(d)) * smoothstep((dia - Y) * F32(1 / 0.03))  # d^0.75
  air = air * (F32(1.0) - F32(0.92) * _soft(F(th.heart), 0.12))
  air = air * (F32(1.0) - _soft(F(circle(0.14, -0.4, 0.075)), 0.3))
  ctx = _Image(X, Y, rng, th, c, lsz, min_r, px, lung_in, F, patchy, view.noise)
  opacity, extra, masks = F32(0.0), F32(0.0), {}
  lucency = F32(0.0)
  for name in signs:
    op, ex, mask = _signs(name, ctx)
    if not mask.any():  # a sign always lands somewhere visible (label fidelity)
      mask = (th.lung_f[0] < 0.2) & lung_in
    masks[name] = mask
    if name in ("pneumothorax", "emphysema"):
      lucency = lucency - F32(c) * op
      extra = extra + ex
    else:
      opacity = 1 - (1 - opacity) * (1 - F32(c) * clip01(op))
      extra = extra + F32(c) * ex
  P = F32(1.5) * dome(Ellipse(0, 0.3, 1.2, 1.5).f(X, Y))
  add_dome(P, view, th.heart, 0.12)
  for s in (-1, 1):
    add_dome(P, view, Ellipse(s * 0.98, -0.88, 0.5, 0.38), 0.7)
    add_dome(P, view, circle(s * 1.06, -0.78, 0.17), 0.2)
    add_dome(P, view, Capsule(s * 0.08, -0.74, s * 0.66, -0.9, 0.035), 0.35)
    add_dome(P, view, Ellipse(s * 0.17, -0.08, 0.08, 0.14), 0.2)
  add_dome(P, view, Ellipse(0, -0.3, 0.16, 0.75), 0.35)
  ax = np.abs(X)
  P = P + F32(0.2) * np.sqrt(np.maximum(1 - np.square(ax * F32(1 / 0.075)), 0)) * (
      F32(1.0) + F32(0.2) * np.cos(Y * F32(2 * _PI / 0.13)))
  trach = np.sqrt(np.maximum(1 - np.square((X - F32(0.01)) * F32(1 / 0.035)), 0))
  P = P - F32(0.3) * trach * smoothstep((F32(-0.3) - Y) * F32(20))
  add_dome(P, view, Ellipse(0.32, th.dia_top[1] + 0.2, 0.09, 0.05), -0.25)
  # Posterior ribs rise from the spine and bend down at the lateral chest wall; anterior
  # ribs (fainter) slope down toward the sternum.
  y0, spacing, bend = th.ribs
  g = F32(-0.2) * ax + F32(3.0 * bend) * np.square(np.maximum(ax - F32(0.35), 0))
  v = (Y + F32(y0) - g) * F32(1 / spacing)
  t = v - np.floor(v)
  cage = smoothstep((F32(0.8) - ax) * F32(15)) * (v > 0) * (v < 10) * (ax > 0.07)
  P = P + F32(0.15) * np.sin(np.minimum(t * F32(1 / 0.4), 1) * F32(_PI)) * cage
  v2 = (Y + F32(0.7) + F32(0.3) * ax) * F32(1 / 0.17)
  t2 = v2 - np.floor(v2)
  P = P + F32(0.08) * np.sin(np.minimum(t2 * F32(1 / 0.3), 1) * F32(_PI)) * cage * (
      ax > 0.15) * (v2 > 0) * (v2 < 6)
  # Vascular markings radiate from the hila (22 wobbly spokes each, cos(22 theta + wobble)
  # from powers of the unit complex number, no arctan2) and fade toward the periphery.
  wob = view.noise(max(0.06 / px, 0.6))
  markings = np.zeros(X.shape, F32)
  for l in th.lungs:  # each lung shows the spokes of its own hilum
    win = view.window(l.bbox())
    if win is False:
      continue
    win = (slice(None), slice(None)) if win is None else win
    dx, dy = X[win] - F32(l.cx * 0.45), Y[win] + F32(0.05)
    w = wob[win] * F32(0.5 * _PI)
    rho = np.sqrt(dx * dx + dy * dy)
    z = (dx + np.complex64(1j) * dy) / (rho + F32(1e-6))
    spokes = F32(0.5) + F32(0.5) * (cpow(z, 22) * (np.cos(w) + np.complex64(1j) * np.sin(w))).real
    for _ in range(4):
      spokes = spokes * spokes
    markings[win] += spokes * np.exp(-rho * F32(2.2))
  if "emphysema" in signs:
    markings = markings * F32(0.4)
  ptx = masks.get("pneumothorax", None)
  if ptx is not None:
    markings = markings * ~ptx
  aerated = air * (1 - opacity)
  P = P - F32(1.05) * aerated * (F32(1.0) + lucency) + F32(0.25) * markings * aerated + extra
  if ptx is not None:
    P = P - F32(0.08) * ptx
  return P, masks, lung_in
