"""Painting organ templates onto views: scenes, primitives, windows and tissue maps.

A `Scene` lists anatomy primitives, painted in order into an integer tissue map (later
ones over earlier ones, optionally only over given tissues), then disease primitives; the
map before the disease is kept so lesion contrast can be scaled afterwards
(`tissue_map`). A `View` knows which pixels a template box can reach, so each small shape
is evaluated only inside its window.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

from dnh_jax.data.medphantom.core import F32, Ellipse, NoiseBank, _columns, smoothstep

# ---------------------------------------------------------------------------------------
# Scene: anatomy primitives painted in order into an integer tissue map, then disease
# primitives (remembering the map before them, so lesion contrast can be scaled).


@dataclasses.dataclass
class Prim:
  """Paint `tissue` where shape.f < 1, optionally only over `within` tissues and inside
  `clip`. Disease prims with lesion=True add to the lesion mask."""

  shape: object
  tissue: int
  within: Sequence[int] | None = None
  clip: object | None = None
  lesion: bool = False


@dataclasses.dataclass
class Pattern:
  """A texture painted as tissue: ridges (|n| < a: thin line networks), spots (n > a:
  round islands) or noisy (shape.f < a + b * n: an irregular-edged region), where n is
  unit smooth noise of correlation length `sigma` (template units)."""

  tissue: int
  mode: str
  sigma: float
  a: float
  b: float = 0.0
  shape: object | None = None
  within: Sequence[int] | None = None
  lesion: bool = False


@dataclasses.dataclass
class Soft:
  """Partial replacement (ground glass, haze): weight `strength` inside shape, fading
  over `edge` (in units of f) outside `1 - edge`; applied to tissue properties, not labels."""

  shape: object
  tissue: int
  strength: float
  edge: float = 0.6
  within: Sequence[int] | None = None
  lesion: bool = True
  noise: float = 0.0  # patchiness: relative modulation of the weight by smooth noise


@dataclasses.dataclass
class Layers:
  """Stacked layers: tissues[k] fills everything below boundaries(x)[k], painted in order
  as Prims with `Below` shapes would be, at two array operations per layer.

  `boundaries` maps a row of x (float32[1, W] or [H, W]) to one curve per tissue."""

  boundaries: object
  tissues: Sequence[int]
  shape = None


@dataclasses.dataclass
class Scene:
  """An organ template instance (anatomy + disease) in template coordinates."""

  anatomy: list
  disease: list
  organ: list                      # shapes whose union is the organ mask
  background: int = 0              # tissue of unpainted template space
  warp: tuple = ()                 # mass-effect displacements (cx, cy, amount, sigma)
  info: dict = dataclasses.field(default_factory=dict)  # landmarks for views


@dataclasses.dataclass
class Painted:
  """A scene painted on a view grid (all arrays of the view's shape)."""

  base: np.ndarray                 # int tissue map without the disease
  labels: np.ndarray               # int tissue map with the disease
  softs: list                      # (tissue, weight float32 map, is_lesion)
  lesion: np.ndarray               # bool lesion mask
  organ: np.ndarray | None         # bool organ mask (when asked)
  noise: NoiseBank | None = None   # the view's noise fields, for image formation


class View:
  """Output grid in template coordinates: X, Y float32[H, W], px template units per pixel.

  With `affine = (r0, rx, ry, c0, cx, cy)` (pixel row = r0 + rx x + ry y, column likewise)
  or a fan's `polar = (apex_x, apex_y, ux, uy, r0, depth, half_angle)`, painting evaluates
  each small shape only inside its bounding box, several times faster than whole images.
  `margin` (template units) pads every box for displacements the map does not know about
  (smooth warps).
  """

  def __init__(self, X, Y, px, rng=None, affine=None, margin=0.0, polar=None, tbox=None):
    self.X, self.Y, self.px = X, Y, px
    self.affine, self.margin, self.polar = affine, margin, polar
    self.noise = NoiseBank(rng, X.shape)  # the image's smooth noise fields
    # Template box the view can see: shapes outside it are skipped without any array work.
    self.tbox = tbox or (float(X.min()), float(X.max()), float(Y.min()), float(Y.max()))
    if affine is not None:  # with absolute values, for the box extents
      self._aff = tuple(affine) + tuple(abs(v) for v in affine[1:3] + affine[4:6])

  def window(self, bbox, extra: float = 0.0):
    """(rows, cols) slices covering template box bbox, None = everything, False = none."""
    if bbox is None:
      return None
    x0, x1, y0, y1 = bbox
    m = self.margin + extra
    tb = self.tbox
    if x1 + m < tb[0] or x0 - m > tb[1] or y1 + m < tb[2] or y0 - m > tb[3]:
      return False
    h, w = self.X.shape
    if self.affine is not None:  # called for every shape: kept to plain float arithmetic
      r0, rx, ry, c0, cx, cy, arx, ary, acx, acy = self._aff
      mx, my = (x0 + x1) * 0.5, (y0 + y1) * 0.5
      hx, hy = (x1 - x0) * 0.5 + m, (y1 - y0) * 0.5 + m
      rm, rh = r0 + rx * mx + ry * my, arx * hx + ary * hy + 1.5
      cm, ch = c0 + cx * mx + cy * my, acx * hx + acy * hy + 1.5
      ra, rb = int(rm - rh), int(rm + rh) + 2
      ca, cb = int(cm - ch), int(cm + ch) + 2
      ra, ca = (ra if ra > 0 else 0), (ca if ca > 0 else 0)
      rb, cb = (rb if rb < h else h), (cb if cb < w else w)
      if ra >= rb or ca >= cb:
        return False
      return slice(ra, rb), slice(ca, cb)
    if self.polar is None:
      return None
    x0, x1, y0, y1 = x0 - m, x1 + m, y0 - m, y1 + m
    ax, ay, ux, uy, r0, depth, half = self.polar
    if x0 <= ax <= x1 and y0 <= ay <= y1:
      return None
    dmin = math.hypot(min(max(ax, x0), x1) - ax, min(max(ay, y0), y1) - ay)
    if dmin > r0 + depth:
      return False
    corners = ((x0 - ax, y0 - ay), (x0 - ax, y1 - ay), (x1 - ax, y0 - ay), (x1 - ax, y1 - ay))
    dmax = math.sqrt(max(dx * dx + dy * dy for dx, dy in corners))
    phis = [math.atan2(uy * dx - ux * dy, ux * dx + uy * dy) for dx, dy in corners]
    if max(phis) - min(phis) > math.pi:  # the box straddles the backward direction
      return None
    rows = ((dmin - r0) / depth * h - 1.5, (dmax - r0) / depth * h + 1.5)
    cols = ((min(phis) + half) / (2 * half) * w - 1.5,
            (max(phis) + half) / (2 * half) * w + 1.5)
    ra, rb = max(int(rows[0]), 0), min(int(math.ceil(rows[1])) + 1, h)
    ca, cb = max(int(cols[0]), 0), min(int(math.ceil(cols[1])) + 1, w)
    if ra >= rb or ca >= cb:
      return False
    return slice(ra, rb), slice(ca, cb)


def dome(f: np.ndarray) -> np.ndarray:
  """Projected thickness profile (0..1) of a body with implicit function f."""
  return np.sqrt(np.maximum(F32(1.0) - f, F32(0.0)))


def field(view: View, shape, outside: float = 4.0) -> np.ndarray:
  """shape.f over the whole view, evaluated only in the shape's window (`outside` beyond)."""
  win = view.window(shape.bbox())
  if win is None:
    return shape.f(view.X, view.Y)
  out = np.full(view.X.shape, F32(outside))
  if win is not False:
    out[win] = shape.f(view.X[win], view.Y[win])
  return out


def add_dome(path: np.ndarray, view: View, shape, amount: float) -> None:
  """path += amount * dome(shape) in place, touching only the shape's window."""
  win = view.window(shape.bbox())
  if win is False:
    return
  if win is None:
    path += F32(amount) * dome(shape.f(view.X, view.Y))
  else:
    path[win] += F32(amount) * dome(shape.f(view.X[win], view.Y[win]))


def _mass_effect(X, Y, warp):
  """Pushes sampled anatomy away from lesion centres (displaced midline, ventricles)."""
  for cx, cy, amount, sigma in warp:
    dx, dy = X - F32(cx), Y - F32(cy)
    g = F32(amount) * np.exp((dx * dx + dy * dy) * F32(-0.5 / sigma ** 2))
    X, Y = X - g * dx, Y - g * dy
  return X, Y


@functools.lru_cache(maxsize=256)
def _allowed_table(within: tuple) -> np.ndarray:
  table = np.zeros(64, bool)
  table[list(within)] = True
  table.setflags(write=False)
  return table


def _allowed(within) -> np.ndarray:
  """bool[64] lookup table: True for the tissues in `within`."""
  return _allowed_table(tuple(within))


def quadratic_basis(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
  """float32[6, H, W] basis (x^2, xy, y^2, x, y, 1): an ellipse is then one small matmul
  (per-call overhead, not arithmetic, dominates painting at 64 px)."""
  X, Y = np.broadcast_arrays(X, Y)
  return np.stack([X * X, X * Y, Y * Y, X, Y, np.ones_like(X)]).astype(F32)


def _paint_list(prims, X, Y, view, extra, labels, lesion, softs, basis):
  px = view.px
  for p in prims:
    kind = type(p)
    win = view.window(None if p.shape is None else p.shape.bbox(), extra)
    if win is False:
      continue
    if win is None:
      Xs, Ys, lab, les, B = X, Y, labels, lesion, basis
    else:
      Xs, Ys, lab, les = X[win], Y[win], labels[win], lesion[win]
      B = basis[:, win[0], win[1]]
    if kind is Prim:
      if type(p.shape) is Ellipse:
        m = (p.shape.quadratic() @ B.reshape(6, -1)).reshape(lab.shape) < 1
      else:
        m = p.shape.f(Xs, Ys) < 1
      if p.clip is not None:
        m &= p.clip.f(Xs, Ys) < 1
    elif kind is Layers:
      idx = np.zeros(lab.shape, np.int8)
      for k, curve in enumerate(p.boundaries(_columns(Xs))):
        idx = np.where(Ys > curve, np.int8(k + 1), idx)
      table = np.array((0,) + tuple(p.tissues), np.int8)
      np.copyto(lab, table[idx], where=idx > 0)
      continue
    elif kind is Pattern:
      n = view.noise(max(p.sigma / px, 0.5))
      n = n if win is None else n[win]
      if p.mode == "ridges":
        m = np.abs(n) < p.a
      elif p.mode == "spots":
        m = n > p.a
      elif p.mode == "noisy":
        m = p.shape.f(Xs, Ys) < p.a + p.b * n
      else:
        raise ValueError(f"Pattern.mode={p.mode!r}: expected ridges, spots or noisy")
      if p.mode != "noisy" and p.shape is not None:
        m &= p.shape.f(Xs, Ys) < 1
    elif kind is Soft:
      f = p.shape.f(Xs, Ys)
      w = smoothstep((F32(1.0) - f) * F32(1.0 / p.edge)) * F32(p.strength)
      if p.noise:
        n = view.noise(max(0.05 / px, 0.5))
        n = n if win is None else n[win]
        w *= np.minimum(np.maximum(F32(1.0) + F32(p.noise) * n, 0), 2)
        w = np.minimum(w, 1.0)
      if p.within is not None:
        w *= _allowed(p.within)[lab]
      if win is not None:
        full = np.zeros(labels.shape, F32)
        full[win] = w
        w_full = full
      else:
        w_full = w
      softs.append((p.tissue, w_full, p.lesion))
      if p.lesion:
        les |= w > 0.3 * p.strength
      continue
    else:
      raise TypeError(f"Unknown primitive {p!r}")
    if p.within is not None:
      m &= _allowed(p.within)[lab]
    lab[m] = p.tissue
    if p.lesion:
      les |= m


def paint(scene: Scene, view: View, want_organ: bool = False) -> Painted:
  """Paints `scene` on `view`; all outputs have the view's shape (textures draw on the
  view's noise bank, so the result is a function of the view's generator)."""
  X, Y = view.X, view.Y
  if scene.warp:
    Xa, Ya = _mass_effect(X, Y, scene.warp)
    extra = max(a * s * 0.7 for _, _, a, s in scene.warp)
  else:
    Xa, Ya, extra = X, Y, 0.0
  labels = np.full(X.shape, scene.background, np.int8)
  lesion = np.zeros(X.shape, bool)
  softs: list = []
  basis = quadratic_basis(Xa, Ya)
  _paint_list(scene.anatomy, Xa, Ya, view, extra, labels, lesion, softs, basis)
  base = labels.copy()
  if Xa is not X:
    basis = quadratic_basis(X, Y)
  _paint_list(scene.disease, X, Y, view, 0.0, labels, lesion, softs, basis)
  organ = None
  if want_organ:
    organ = np.zeros(X.shape, bool)
    for s in scene.organ:
      organ |= s.f(Xa, Ya) < 1
  return Painted(base, labels, softs, lesion, organ, view.noise)


def tissue_map(column: np.ndarray, painted: Painted, contrast: float) -> np.ndarray:
  """Per-pixel property float32[H, W] from a per-tissue property column, with the disease
  blended in at `contrast` (1 = full lesion property, 0.5 = halfway to the background)."""
  base = column[painted.base]
  if painted.labels is painted.base:
    out = base
  else:
    out = base + F32(contrast) * (column[painted.labels] - base)
  for tissue, w, is_lesion in painted.softs:
    k = F32(contrast) if is_lesion else F32(1.0)
    out = out + k * w * (column[tissue] - out)
  return out


