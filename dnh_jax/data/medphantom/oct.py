"""OCT B-scan templates: the layered retina and the surface layers of other organs.

OCT images a few millimetres below a surface, so every organ becomes a stack of layers
under the surface (columns = lateral position, rows = depth): the retina with its ten
bands and foveal pit, the cortex under the meninges, skin and adipose tissue over breast
gland, pleura over alveoli, the liver capsule over parenchyma. Retinal diseases are layer
disruptions (drusen: bumps under the RPE; DME: intraretinal cysts and thickening; CNV: a
mound under the RPE with subretinal fluid); other diseases are masses or fillings in the
layers, drawn with the same shape vocabulary as the cross-sectional templates.
"""

from __future__ import annotations

import numpy as np

from dnh_jax.data.medphantom import tissues as T
from dnh_jax.data.medphantom.core import Band, Below, Blob, F32, clamp, circle, rand_harmonics
from dnh_jax.data.medphantom.paint import Layers, Pattern, Prim, Scene, Soft, View


def oct_grid(rng: np.random.Generator, size: int, var: float) -> View:
  """B-scan grid; X is a broadcast row (constant down each column)."""
  s = clamp(1 + rng.normal(0, 0.05) * var, 0.85, 1.15)
  off = float(rng.normal(0, 0.05) * var)
  x = ((np.arange(size, dtype=F32) + 0.5) / size * 2 - 1) / F32(s) + F32(off)
  y = ((np.arange(size, dtype=F32) + 0.5) / size * 2 - 1) / F32(s)
  X = np.broadcast_to(x[None, :], (size, size))
  Y = np.ascontiguousarray(np.broadcast_to(y[:, None], (size, size)))
  k = 0.5 * size
  affine = (k - 0.5, 0.0, s * k, (1 - off * s) * k - 0.5, s * k, 0.0)
  tbox = (float(x[0]), float(x[-1]), float(y[0]), float(y[-1]))
  return View(X, Y, 2.0 / (size * s), rng, affine, tbox=tbox)


def _gauss(x, m, w):
  return np.exp(np.square((x - F32(m)) * F32(1 / w)) * F32(-0.5))


class _Retina:
  """Boundary curves of the retinal layers, with disease-driven elevations."""

  # Layer order top to bottom; each boundary is the top of the layer.
  LAYERS = (T.NFL, T.GCL, T.IPL, T.INL, T.OPL, T.ONL, T.EZ, T.GCL, T.RPE)

  def __init__(self, rng, var):
    J = lambda s: float(s * var * rng.standard_normal())
    self.y0, self.tilt, self.curv = 0.2 + J(0.08), J(0.08), 0.2 + J(0.06)
    self.xf, self.nasal = J(0.1), float(rng.choice((-1.0, 1.0)))
    self.pit = 0.9 + J(0.05)
    self.scale = 1.0 + J(0.06)
    self.elev = []      # (m, w, h): RPE and retina lifted (drusen, CNV)
    self.detach = []    # (m, w, h): neurosensory retina lifted off the RPE (fluid)
    self.thick = []     # (m, w, h): intraretinal thickening (DME)
    self._memo_x, self._memo = None, None

  def _bumps(self, x, bumps):
    out = F32(0.0)
    for m, w, h in bumps:
      out = out + F32(h) * _gauss(x, m, w)
    return out

  def bruch(self, x):
    return F32(self.y0) + F32(self.tilt) * x - F32(self.curv) * np.square(x)

  def boundaries(self, x):
    """Tops of NFL, GCL, IPL, INL, OPL, ONL, EZ, OS, RPE (list of curves at x)."""
    # Every layer asks for the same row of x in turn: compute the stack once per row.
    if self._memo_x is not None and self._memo_x.shape == x.shape and np.array_equal(
        self._memo_x, x):
      return self._memo
    self._memo_x, self._memo = np.array(x), self._boundaries(x)
    return self._memo

  def _boundaries(self, x):
    fov = _gauss(x, self.xf, 0.14) * F32(self.pit)
    k = F32(1.5 * self.scale)
    nfl = (F32(0.015) + F32(0.035) * np.clip(self.nasal * (x - self.xf) + 0.4, 0, 1.4)) * (1 - fov)
    thick = self._bumps(x, self.thick)
    widths = [nfl, F32(0.05) * (1 - 0.95 * fov), F32(0.04) * (1 - 0.85 * fov),
              F32(0.04) * (1 - 0.7 * fov) + thick * F32(0.5), F32(0.025) * (1 - 0.5 * fov),
              F32(0.065) * (1 + 0.35 * fov) + thick * F32(0.5), F32(0.016), F32(0.016),
              F32(0.024)]
    elev = self._bumps(x, self.elev)
    lift = elev + self._bumps(x, self.detach)
    bottom = self.bruch(x)
    tops = []
    for i, wd in enumerate(reversed(widths)):
      bottom = bottom - wd * (F32(1.0) if i == 0 else k)
      tops.append(bottom - (elev if i == 0 else lift))
    return tops[::-1]

  def top(self, i):
    return lambda x: self.boundaries(x)[i]


def retina_scene(rng, var, disease, lsz, min_r):
  r = _Retina(rng, var)
  dis = []
  h_min = min_r * 1.1
  if disease == "drusen":
    for _ in range(int(rng.integers(2, 6))):
      r.elev.append((r.xf + rng.uniform(-0.45, 0.45), rng.uniform(0.035, 0.07) * lsz,
                     max(rng.uniform(0.035, 0.07) * lsz, h_min)))
  elif disease == "cnv":
    m = r.xf + rng.uniform(-0.15, 0.15)
    w = rng.uniform(0.06, 0.1) * lsz
    r.elev.append((m, w, max(rng.uniform(0.06, 0.11) * lsz, h_min)))
    side = rng.choice((-1, 1))
    r.detach.append((m + side * w * 1.5, w * 1.2, max(rng.uniform(0.03, 0.07) * lsz, h_min)))
  elif disease == "dme":
    r.thick.append((r.xf, 0.25, rng.uniform(0.06, 0.12) * lsz))
  anatomy = [Layers(lambda x: r.boundaries(x) + [r.bruch(x), r.bruch(x) + F32(0.22)],
                   _Retina.LAYERS + (T.CHOROID, T.SCLERA)),
             Pattern(T.INL, "spots", 0.04, 1.0, within=(T.CHOROID,))]
  vessels = []
  for _ in range(int(rng.integers(1, 4))):
    vx = float(rng.uniform(-0.9, 0.9))
    if abs(vx - r.xf) > 0.2:
      vy = float(r.boundaries(np.array([vx], F32))[1][0])
      vessels.append(Prim(circle(vx, vy, 0.022), T.BLOOD, within=(T.NFL, T.GCL, T.IPL)))
  anatomy += vessels
  if disease in ("drusen", "cnv"):
    tissue = T.DRUSEN if disease == "drusen" else T.CNV
    rpe_bottom = lambda x: r.boundaries(x)[8] + F32(0.024)
    dis.append(Prim(Band(rpe_bottom, r.bruch), tissue, within=(T.RPE,), lesion=True))
  if disease == "cnv":
    dis.append(Prim(Band(lambda x: r.boundaries(x)[8] - r._bumps(x, r.detach),
                         r.top(8)), T.FLUID, within=(T.GCL, T.EZ, T.ONL), lesion=True))
  if disease == "dme":
    for i in range(int(rng.integers(3, 8))):
      cx = r.xf + rng.uniform(-0.3, 0.3) * (0.4 if i == 0 else 1.0)
      bx = [float(v[0]) for v in r.boundaries(np.array([cx], F32))]
      layer = int(rng.choice((3, 5)))
      cy = (bx[layer] + bx[layer + 1]) / 2
      a = max(rng.uniform(0.035, 0.075) * lsz, min_r)
      dis.append(Prim(Blob(cx, cy, a, rng.uniform(0.6, 1.1)), T.FLUID,
                      within=(T.GCL, T.IPL, T.INL, T.OPL, T.ONL), lesion=True))
  return Scene(anatomy, dis, [Band(r.top(0), r.bruch)], T.FLUID, (), {})


def _surface_scene(rng, var, layers, textures, organ_index):
  """Generic surface B-scan: a wavy surface and layers of given thickness below it."""
  J = lambda s: float(s * var * rng.standard_normal())
  y0, tilt, curv = -0.55 + J(0.06), J(0.08), 0.12 + J(0.06)
  w1, p1 = 0.02 + J(0.01), rng.uniform(0, 6.3)
  surface = lambda x: (F32(y0) + F32(tilt) * x + F32(curv) * np.square(x)
                       + F32(w1) * np.sin(F32(4.0) * x + F32(p1)))
  depths, depth = [], 0.0
  for _, thick in layers:
    depths.append(depth)
    depth += thick * (1 + J(0.08))

  def boundaries(x):
    s = surface(x)
    return [s + F32(d) for d in depths]

  anatomy = [Layers(boundaries, tuple(t for t, _ in layers)), *textures]
  organ = Below(lambda x: surface(x) + F32(depths[organ_index]))
  return anatomy, organ, surface


def surface_scene(organ, rng, var, disease, lsz, min_r):
  """OCT of brain cortex, breast skin, lung pleura or liver capsule, with disease signs."""
  R = lambda lo, hi: max(rng.uniform(lo, hi) * lsz, min_r)
  if organ == "brain":
    layers = [(T.SOFT, 0.04), (T.GM, 0.5), (T.WM, 0.0)]
    tex = [Pattern(T.FLUID, "ridges", 0.05, 0.04, within=(T.GM,))]
  elif organ == "breast":
    layers = [(T.SKIN, 0.05), (T.SOFT, 0.22), (T.FAT, 0.45), (T.GLAND, 0.0)]
    tex = [Pattern(T.SOFT, "ridges", 0.035, 0.12, within=(T.FAT,))]
  elif organ == "chest":
    layers = [(T.SOFT, 0.05), (T.LUNG, 0.0)]
    tex = [Pattern(T.GAS, "spots", 0.035, -0.1, within=(T.LUNG,))]
  elif organ == "abdomen":
    layers = [(T.SOFT, 0.05), (T.LIVER, 0.0)]
    tex = [Pattern(T.FLUID, "ridges", 0.03, 0.06, within=(T.LIVER,))]
  else:
    raise ValueError(f"surface_scene: no OCT surface template for organ {organ!r}")
  anatomy, organ_shape, surface = _surface_scene(rng, var, layers, tex, 1)
  for _ in range(int(rng.integers(1, 3)) if organ == "brain" else 0):
    vx = float(rng.uniform(-0.8, 0.8))
    anatomy.append(Prim(circle(vx, float(surface(np.float32(vx))) + 0.03, 0.035), T.BLOOD))
  dis = []
  cx = float(rng.uniform(-0.4, 0.4))
  sy = float(surface(np.float32(cx)))
  harm = lambda a: rand_harmonics(rng, a)
  if disease == "glioma":
    r, c = R(0.14, 0.22), (cx, sy + rng.uniform(0.45, 0.75))
    dis = [Prim(Blob(*c, r * 1.8, 1.2, 0.0, harm(0.3)), T.EDEMA, within=(T.GM, T.WM),
                lesion=True),
           Prim(Blob(*c, r, 1.1, 0.0, harm(0.15)), T.GLIOMA, within=T.SOFT_TISSUES,
                lesion=True)]
  elif disease == "meningioma":
    r = R(0.16, 0.24)
    dis = [Prim(Blob(cx, sy + r * 0.45, r, 1.3, 0.0, harm(0.04)), T.MENINGIOMA,
                within=(T.AIR,) + T.SOFT_TISSUES, lesion=True)]
  elif disease == "pituitary_tumor":
    r = R(0.08, 0.13)
    dis = [Prim(Blob(rng.normal(0, 0.05), 0.55 - r * 0.6, r, 0.9, 0.0, harm(0.06)), T.ADENOMA,
                within=T.SOFT_TISSUES, lesion=True)]
  elif disease in ("benign", "malignant"):
    r, c = R(0.13, 0.22), (cx, sy + rng.uniform(0.5, 0.85))
    if disease == "benign":
      shape = Blob(*c, r, rng.uniform(1.3, 1.7), 0.0, rand_harmonics(rng, 0.04, (2, 3)))
    else:
      shape = Blob(*c, r, rng.uniform(0.7, 0.9), 0.0, harm(0.12),
                   (int(rng.integers(7, 13)), rng.uniform(0.5, 0.9), 16, rng.uniform(0, 6.3), 0.4))
    tissue = T.BENIGN if disease == "benign" else T.MALIGNANT
    dis = [Prim(shape, tissue, within=T.SOFT_TISSUES, lesion=True)]
  elif disease == "covid":
    for _ in range(int(rng.integers(2, 4))):
      px_ = float(rng.uniform(-0.7, 0.7))
      c = (px_, float(surface(np.float32(px_))) + rng.uniform(0.2, 0.8))
      dis.append(Soft(Blob(*c, R(0.15, 0.28), 1.3, 0.0, harm(0.2)), T.GGO,
                      rng.uniform(0.6, 0.85), 0.7, within=(T.LUNG, T.GAS), noise=0.4))
  elif disease == "pneumonia":
    r, c = R(0.3, 0.45), (cx, sy + rng.uniform(0.5, 0.8))
    dis = [Prim(Blob(*c, r, 1.3, 0.0, harm(0.2)), T.CONSOLIDATION, within=(T.LUNG, T.GAS),
                lesion=True),
           Pattern(T.GAS, "spots", 0.04, 1.8, within=(T.CONSOLIDATION,))]
  elif disease == "liver_lesion":
    r, c = R(0.14, 0.25), (cx, sy + rng.uniform(0.45, 0.8))
    dis = [Prim(Blob(*c, r, 1.1, 0.0, harm(0.08)), T.LIVER_LESION,
                within=T.SOFT_TISSUES, lesion=True)]
  return Scene(anatomy, dis, [organ_shape], T.AIR, (), {})


def oct_scene(organ, rng, var, disease, lsz, min_r):
  """The OCT template of `organ` with `disease` (a Scene on oct_grid coordinates)."""
  if organ == "retina":
    return retina_scene(rng, var, disease, lsz, min_r)
  return surface_scene(organ, rng, var, disease, lsz, min_r)

