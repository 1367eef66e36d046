"""Cross-sectional organ templates (CT, MRI and ultrasound) with their disease signs.

Each builder returns a `Scene` in template coordinates, anterior (or superior) up:
brain as a coronal slice through the sella, breast / chest / abdomen as axial slices, the
retina as an axial slice through both orbits (an ocular B-scan is a fan through one globe).
`info` carries what the views need: the CT window, where an ultrasound probe goes (a
surface ellipse and a centre to aim from, or a fixed acoustic window) and the target the
sonographer would centre the image on (the lesion, or a random point of the organ).
"""

from __future__ import annotations

import math

import numpy as np

from dnh_jax.data.medphantom import tissues as T
from dnh_jax.data.medphantom.core import Blob, Capsule, Ellipse, HalfPlane, circle, rand_harmonics
from dnh_jax.data.medphantom.paint import Pattern, Prim, Scene, Soft

_PI = math.pi
# Typical ultrasound imaging depth per organ, in template units.
US_DEPTH = {"brain": 1.5, "breast": 0.4, "chest": 0.6, "retina": 0.75, "abdomen": 0.9}


def _jitter(rng, var):
  return lambda s: float(s * var * rng.standard_normal())


def _lesion_r(rng, lo, hi, size, min_r):
  return max(rng.uniform(lo, hi) * size, min_r)


# ---------------------------------------------------------------------------------------
# Brain: coronal slice through the pituitary.


# Every template has the signature (rng, var, disease, lsz, min_r, modality) -> Scene:
# var = anatomy variation, lsz = lesion size multiplier, min_r = smallest lesion radius
# (template units) that still covers pixels, modality = the modality that will render it
# (only ultrasound changes anatomy: an acoustic window through the skull).


def brain(rng, var, disease, lsz, min_r, modality):
  """Coronal brain: scalp, skull, CSF, cortex and white matter, ventricles, sella.

  glioma: irregular intra-axial mass (enhancing rim, necrotic core) in edema, with mass
  effect; meningioma: round extra-axial mass on the inner skull with a CSF cleft and dural
  tail; pituitary_tumor: small midline mass at the base, in the sella.
  """
  J = _jitter(rng, var)
  hx, hy, cy = 0.80 + J(0.03), 0.86 + J(0.03), -0.04
  ix, iy = hx - 0.085, hy - 0.085
  inner = Ellipse(0, cy, ix, iy)
  cer = Ellipse(J(0.01), -0.13 + J(0.01), ix - 0.05, 0.6 + J(0.02))
  tl = [Ellipse(s * (0.44 + J(0.015)), 0.36 + J(0.015), 0.22, 0.19) for s in (-1, 1)]
  anatomy = [
      Prim(Ellipse(0, cy, hx, hy), T.SKIN), Prim(Ellipse(0, cy, hx - 0.02, hy - 0.02), T.FAT),
      Prim(Ellipse(0, cy, hx - 0.04, hy - 0.04), T.BONE),
      Prim(Ellipse(0, cy, hx - 0.055, hy - 0.055), T.MARROW),
      Prim(Ellipse(0, cy, hx - 0.07, hy - 0.07), T.BONE), Prim(inner, T.FLUID),
      Prim(Ellipse(0, 0.74, 0.26, 0.17), T.BONE), Prim(Ellipse(0, 0.77, 0.12, 0.07), T.GAS),
      Prim(cer, T.GM), *[Prim(e, T.GM) for e in tl],
      Pattern(T.WM, "noisy", 0.035, 0.7, 0.22, shape=cer.scaled(1.0), within=(T.GM,)),
      *[Pattern(T.WM, "noisy", 0.04, 0.45, 0.12, shape=e, within=(T.GM,)) for e in tl],
      Pattern(T.FLUID, "ridges", 0.035, 0.1, within=(T.GM,)),
      Prim(Capsule(0, cer.cy - cer.b, 0, -0.22, 0.012), T.FLUID),
      Prim(Ellipse(0, -0.2, 0.24, 0.05), T.WM),
      *[Prim(Ellipse(s * 0.2, 0.07, 0.08, 0.12, s * 0.2), T.GM) for s in (-1, 1)],
      *[Prim(Ellipse(s * (0.09 + J(0.01)), -0.1, 0.055 + J(0.01), 0.11, -s * 0.35), T.FLUID)
        for s in (-1, 1)],
      Prim(Capsule(0, 0.02, 0, 0.22, 0.012), T.FLUID),
      Prim(Ellipse(0, 0.47, 0.1, 0.06), T.FLUID),
      Prim(Ellipse(0, 0.535, 0.06, 0.035), T.ORGAN),
      *[Prim(circle(s * 0.1, 0.56, 0.03), T.BLOOD) for s in (-1, 1)],
  ]
  if modality == "US":  # neonatal head ultrasound looks through the anterior fontanelle
    anatomy.insert(5, Prim(Ellipse(0, cy - hy + 0.04, 0.16, 0.08), T.SOFT))
  info = {"window": (40.0, 90.0), "us": ("fixed", (0.0, cy - hy)),
          "us_depth": US_DEPTH["brain"],
          "surface": Ellipse(0, cy, hx, hy)}
  dis, warp = [], []
  if disease == "glioma":
    s = rng.choice((-1, 1))
    c = (s * rng.uniform(0.18, 0.42), rng.uniform(-0.45, 0.08))
    r = _lesion_r(rng, 0.11, 0.18, lsz, min_r)
    dis = [Prim(Blob(*c, r * rng.uniform(1.6, 2.1), rng.uniform(0.8, 1.25), rng.uniform(0, _PI),
                     rand_harmonics(rng, 0.3, (2, 3, 4, 5, 7))), T.EDEMA,
                within=(T.GM, T.WM, T.FLUID), lesion=True),
           Prim(Blob(*c, r, rng.uniform(0.8, 1.25), rng.uniform(0, _PI),
                     rand_harmonics(rng, 0.16)), T.GLIOMA, within=T.SOFT_TISSUES, lesion=True)]
    if rng.random() < 0.7:
      dis.append(Prim(Blob(c[0] + J(0.02), c[1] + J(0.02), r * rng.uniform(0.4, 0.65),
                           harmonics=rand_harmonics(rng, 0.15)), T.NECROSIS,
                      within=(T.GLIOMA,), lesion=True))
    warp = [(*c, 0.35, r * 1.6)]
  elif disease == "meningioma":
    phi = rng.uniform(-_PI + 0.45, -0.45) if rng.random() < 0.8 else rng.choice((-1, 1)) * 0.2
    r = _lesion_r(rng, 0.1, 0.17, lsz, min_r)
    px, py = inner.point(phi)
    nx, ny = -math.cos(phi) / ix, -math.sin(phi) / iy
    n = math.hypot(nx, ny)
    nx, ny = nx / n, ny / n
    c = (px + nx * r * 0.8, py + ny * r * 0.8)
    ang = math.atan2(ny, nx) + _PI / 2
    blob = Blob(*c, r, rng.uniform(1.0, 1.4), ang, rand_harmonics(rng, 0.04, (2, 3)))
    tail = Capsule(px + nx * 0.03 - ny * r * 1.7, py + ny * 0.03 + nx * r * 1.7,
                   px + nx * 0.03 + ny * r * 1.7, py + ny * 0.03 - nx * r * 1.7, 0.014)
    dis = [Prim(Blob(*c, r * 1.15, 1.2, ang), T.FLUID, within=(T.GM, T.WM), clip=inner),
           Prim(blob, T.MENINGIOMA, within=T.SOFT_TISSUES, clip=inner, lesion=True),
           Prim(tail, T.MENINGIOMA, within=(T.FLUID, T.GM), clip=inner, lesion=True)]
    warp = [(*c, 0.3, r * 1.3)]
  elif disease == "pituitary_tumor":
    r = _lesion_r(rng, 0.055, 0.09, lsz, min_r)
    c = (J(0.01), 0.545 - r * 0.6)
    dis = [Prim(Blob(*c, r, rng.uniform(0.75, 0.95), J(0.1), rand_harmonics(rng, 0.06, (2, 3))),
                T.ADENOMA, within=T.SOFT_TISSUES, lesion=True)]
    warp = [(*c, 0.25, r * 1.5)]
  if dis:
    info["target"] = (c[0], c[1])
  else:
    info["target"] = (rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.2))
  return Scene(anatomy, dis, [cer, *tl], T.AIR, tuple(warp), info)


# ---------------------------------------------------------------------------------------
# Breast: axial slice through both breasts (anterior up) and the chest wall.


def breast(rng, var, disease, lsz, min_r, modality):
  """Axial breasts: skin, fat with Cooper's ligaments, fibroglandular cone, pectoralis.

  benign: oval, circumscribed, wider-than-tall mass; malignant: irregular spiculated,
  taller-than-wide mass (strongly attenuating) with micro-calcifications.
  """
  del modality
  J = _jitter(rng, var)
  cyb, bx, by = 0.62 + J(0.02), 0.96, 0.5
  breasts = []
  anatomy = [Prim(Ellipse(0, cyb, bx, by), T.SKIN), Prim(Ellipse(0, cyb, bx - 0.02, by - 0.02),
                                                         T.FAT)]
  for s in (-1, 1):
    e = Ellipse(s * (0.45 + J(0.02)), 0.2 + J(0.02), 0.36 + J(0.03), 0.44 + J(0.04), J(0.05))
    breasts.append(e)
    anatomy += [Prim(e, T.SKIN), Prim(Ellipse(e.cx, e.cy, e.a - 0.015, e.b - 0.015), T.FAT),
                Pattern(T.GLAND, "noisy", 0.05, 1.0, 0.4,
                        shape=Ellipse(e.cx, e.cy - 0.06, e.a * 0.62, e.b * 0.6),
                        within=(T.FAT,)),
                Prim(Ellipse(e.cx, e.cy - e.b + 0.005, 0.035, 0.025), T.SKIN)]
  anatomy += [
      Pattern(T.SOFT, "ridges", 0.05, 0.05, within=(T.FAT,)),
      Prim(Ellipse(0, cyb + 0.02, bx - 0.07, by - 0.06), T.SOFT),
      *[Prim(Ellipse(*Ellipse(0, cyb + 0.02, bx - 0.12, by - 0.1).point(phi), 0.055, 0.022,
                     phi + _PI / 2), T.BONE)
        for phi in (-2.6, -2.25, -1.9, -1.25, -0.9, -0.55)],
      Prim(Ellipse(0, cyb + 0.02, bx - 0.16, by - 0.13), T.SOFT),
      *[Prim(Ellipse(s * 0.38, cyb + 0.14, 0.3, 0.26), T.LUNG) for s in (-1, 1)],
      Prim(Ellipse(0.05, cyb + 0.2, 0.24, 0.19), T.BLOOD),
      Prim(Ellipse(0, cyb - by + 0.1, 0.07, 0.025), T.BONE),
  ]
  side = int(rng.integers(2))
  e = breasts[side]
  info = {"view": ((0.0, 0.28), 1.3), "window": (40.0, 400.0),
          "us": ("radial", (e.cx, e.cy + 0.3)), "us_depth": US_DEPTH["breast"],
          "surface": e}
  c = (e.cx + rng.uniform(-0.5, 0.5) * e.a * 0.55, rng.uniform(-0.12, 0.12) + e.cy - 0.06)
  dis = []
  if disease == "benign":
    r = _lesion_r(rng, 0.045, 0.085, lsz, min_r)
    dis = [Prim(Blob(*c, r, rng.uniform(1.3, 1.8), J(0.2), rand_harmonics(rng, 0.04, (2, 3))),
                T.BENIGN, within=(T.FAT, T.GLAND, T.SOFT), lesion=True)]
  elif disease == "malignant":
    r = _lesion_r(rng, 0.05, 0.09, lsz, min_r)
    spikes = (int(rng.integers(6, 11)), rng.uniform(0.3, 0.7), 8, rng.uniform(0, 6.3), 0.6)
    dis = [Prim(Blob(*c, r, rng.uniform(0.65, 0.9), J(0.2), rand_harmonics(rng, 0.12),
                     spikes), T.MALIGNANT, within=(T.FAT, T.GLAND, T.SOFT), lesion=True)]
    for _ in range(int(rng.integers(0, 6))):
      dis.append(Prim(circle(c[0] + rng.normal(0, r * 0.4), c[1] + rng.normal(0, r * 0.4),
                             0.011), T.CALC, within=(T.MALIGNANT,), lesion=True))
  info["target"] = c
  return Scene(anatomy, dis, breasts, T.AIR, (), info)


# ---------------------------------------------------------------------------------------
# Chest: axial slice at the level of the heart.


def _ribs_around(e: Ellipse, n, skip, rng, var, a=0.045, b=0.02):
  phis = np.linspace(-_PI, _PI, n, endpoint=False) + var * rng.normal(0, 0.04, n)
  out = []
  for phi in phis:
    if any(abs(math.remainder(phi - a_, 2 * _PI)) < w for a_, w in skip):
      continue
    out.append(Prim(Ellipse(*e.point(phi), a, b, phi + _PI / 2), T.BONE))
  return out


def chest(rng, var, disease, lsz, min_r, modality):
  """Axial chest: chest wall and ribs, lungs with vessels, heart, great vessels, spine.

  covid: bilateral peripheral ground-glass patches; pneumonia: lobar consolidation bounded
  by a fissure, with air bronchograms and a ground-glass halo.
  """
  del modality
  J = _jitter(rng, var)
  bx, by, cy = 0.92 + J(0.03), 0.64 + J(0.03), 0.04
  lungs = [Ellipse(s * (0.4 + J(0.02)), cy - 0.03 + J(0.02), 0.33 + J(0.02), 0.46 + J(0.02),
                   s * 0.08) for s in (-1, 1)]
  heart = Ellipse(0.08 + J(0.02), cy + 0.1, 0.27 + J(0.02), 0.21, -0.5)
  anatomy = [
      Prim(Ellipse(0, cy, bx, by), T.SKIN), Prim(Ellipse(0, cy, bx - 0.02, by - 0.02), T.FAT),
      Prim(Ellipse(0, cy, bx - 0.07, by - 0.07), T.SOFT),
      *_ribs_around(Ellipse(0, cy, bx - 0.1, by - 0.09), 14,
                    ((-_PI / 2, 0.3), (_PI / 2, 0.45)), rng, var),
      *[Prim(e, T.LUNG) for e in lungs],
      Pattern(T.BLOOD, "spots", 0.022, 2.0, within=(T.LUNG,)),
      Pattern(T.BLOOD, "ridges", 0.05, 0.05, shape=Ellipse(0, cy, 0.6, 0.4), within=(T.LUNG,)),
      Prim(heart.scaled(1.08), T.FAT), Prim(heart, T.ORGAN), Prim(heart.scaled(0.75), T.BLOOD),
      Prim(Ellipse(0.0, cy - 0.12, 0.1, 0.3), T.SOFT),
      Prim(circle(-0.03, cy - 0.2, 0.065), T.BLOOD), Prim(circle(0.1, cy + 0.33, 0.06), T.BLOOD),
      Prim(circle(0.02, cy + 0.27, 0.025), T.SOFT),
      *[Prim(circle(s * 0.1, cy - 0.05, 0.025), T.GAS) for s in (-1, 1)],
      Prim(Ellipse(0, cy + 0.44, 0.1, 0.09), T.BONE), Prim(Ellipse(0, cy + 0.44, 0.08, 0.07),
                                                             T.MARROW),
      Prim(circle(0, cy + 0.555, 0.035), T.FLUID),
      Prim(Ellipse(0, cy - by + 0.09, 0.07, 0.025), T.BONE),
  ]
  info = {"window": (-550.0, 1500.0), "us": ("radial", (0.0, cy)),
          "us_depth": US_DEPTH["chest"],
          "surface": Ellipse(0, cy, bx, by)}
  dis = []
  if disease == "covid":
    sides = [-1, 1] + [rng.choice((-1, 1)) for _ in range(int(rng.integers(0, 4)))]
    for s in sides:
      lung = lungs[(s + 1) // 2]
      u = rng.uniform(-0.5 * _PI, 0.8 * _PI)
      phi = u if s > 0 else _PI - u
      p = lung.point(phi, rng.uniform(0.68, 0.85))
      r = _lesion_r(rng, 0.08, 0.15, lsz, min_r)
      dis.append(Soft(Blob(*p, r, rng.uniform(0.5, 0.9), phi + _PI / 2,
                           rand_harmonics(rng, 0.2)), T.GGO, rng.uniform(0.55, 0.85), 0.7,
                      within=(T.LUNG, T.BLOOD), noise=0.4))
    info["target"] = p
  elif disease == "pneumonia":
    s = rng.choice((-1, 1))
    lung = lungs[(s + 1) // 2]
    lower = rng.random() < 0.7
    q = (lung.cx, lung.cy + rng.uniform(-0.12, 0.12))
    nx, ny = s * rng.uniform(-0.5, 0.5), (1.0 if lower else -1.0)
    cut = HalfPlane(-nx, -ny, -(nx * q[0] + ny * q[1]))
    c = (lung.cx + s * 0.08, q[1] + (0.2 if lower else -0.2))
    r = max(rng.uniform(0.28, 0.4) * lsz, min_r)
    shape = Blob(*c, r, 0.8, 0.0, rand_harmonics(rng, 0.2))
    dis = [Prim(shape, T.CONSOLIDATION, within=(T.LUNG, T.BLOOD), clip=cut, lesion=True),
           Pattern(T.GAS, "ridges", 0.04, 0.07, within=(T.CONSOLIDATION,)),
           Soft(Blob(*c, r * 1.25, 0.8), T.GGO, 0.35, 0.5, within=(T.LUNG,))]
    info["target"] = c
  else:
    s = rng.choice((-1, 1))
    info["target"] = lungs[(s + 1) // 2].point(rng.uniform(-_PI, _PI), 0.6)
  return Scene(anatomy, dis, lungs, T.AIR, (), info)


# ---------------------------------------------------------------------------------------
# Retina: axial slice through both orbits (globes, lenses, optic nerves, orbital fat).


def retina(rng, var, disease, lsz, min_r, modality):
  """Axial orbits: globes (wall, vitreous, lens), orbital fat cones, optic nerves.

  Signs at the posterior pole of one globe: drusen = small dense nodules on the wall,
  dme = a thickened wall with fluid cysts, cnv = a mound with a fluid pocket.
  """
  del modality
  J = _jitter(rng, var)
  gx, gy, gr = 0.42 + J(0.02), -0.28 + J(0.02), 0.27 + J(0.015)
  globes = [circle(s * gx, gy, gr) for s in (-1, 1)]
  anatomy = [Prim(Ellipse(0, 0.4, 1.1, 1.06), T.SKIN), Prim(Ellipse(0, 0.4, 1.07, 1.03), T.SOFT),
             *[Prim(g.scaled(1.12), T.SKIN) for g in globes],
             Prim(Ellipse(0, -0.45, 0.12, 0.3), T.SOFT),
             Prim(Ellipse(0, 0.85, 0.95, 0.55), T.BONE), Prim(Ellipse(0, 0.86, 0.93, 0.52), T.GM),
             Pattern(T.WM, "noisy", 0.05, 0.6, 0.15, shape=Ellipse(0, 0.9, 0.8, 0.42),
                     within=(T.GM,))]
  for s in (-1, 1):
    apex = (s * 0.15, 0.36)
    mid = ((s * gx + apex[0]) / 2, (gy + 0.1 + apex[1]) / 2)
    ang = math.atan2(apex[1] - gy, apex[0] - s * gx)
    cone = Ellipse(*mid, 0.42, 0.2, ang)
    anatomy += [Prim(cone.scaled(1.06, 1.14), T.BONE), Prim(cone, T.FAT),
                Prim(Capsule(s * (gx - 0.2), gy + 0.05, apex[0] + s * 0.02, apex[1], 0.028),
                     T.SOFT),
                Prim(Capsule(s * (gx + 0.2), gy + 0.1, apex[0] + s * 0.06, apex[1], 0.028),
                     T.SOFT),
                Prim(Capsule(s * (gx - 0.06), gy + gr * 0.9, apex[0], apex[1], 0.03), T.SOFT)]
  anatomy += [Prim(Ellipse(0, -0.05, 0.12, 0.3), T.GAS),
              Pattern(T.BONE, "ridges", 0.03, 0.12, within=(T.GAS,)),
              Prim(Ellipse(0, 0.4, 0.12, 0.1), T.GAS)]
  for g in globes:
    anatomy += [Prim(g, T.RETINA), Prim(g.scaled(0.93), T.FLUID),
                Prim(Ellipse(g.cx, gy - gr + 0.075, 0.1, 0.045), T.LENS)]
  side = int(rng.integers(2))
  s = 2 * side - 1
  g = globes[side]
  info = {"view": ((0.0, 0.05), 1.05), "window": (40.0, 350.0),
          "us": ("radial", (g.cx, 3.0)), "us_depth": US_DEPTH["retina"],
          "surface": g.scaled(1.12)}
  phi = _PI / 2 - s * rng.uniform(0.1, 0.45)
  wall = lambda k, dphi=0.0: (g.cx + gr * k * math.cos(phi + dphi),
                              gy + gr * k * math.sin(phi + dphi))
  dis = []
  if disease == "drusen":
    for _ in range(int(rng.integers(2, 5))):
      r = _lesion_r(rng, 0.02, 0.032, lsz, min_r * 0.8)
      dis.append(Prim(circle(*wall(0.93, rng.uniform(-0.2, 0.2)), r), T.DRUSEN,
                      within=(T.FLUID, T.RETINA), lesion=True))
  elif disease == "dme":
    a = _lesion_r(rng, 0.06, 0.09, lsz, min_r)
    b = max(0.032 * lsz, min_r * 0.8)
    dis = [Prim(Ellipse(*wall(0.92), a, b, phi + _PI / 2), T.DME, within=(T.FLUID, T.RETINA),
                lesion=True)]
    for _ in range(int(rng.integers(2, 4))):
      dis.append(Prim(circle(*wall(0.92, rng.uniform(-0.12, 0.12)), 0.012), T.FLUID,
                      within=(T.DME,), lesion=True))
  elif disease == "cnv":
    a = _lesion_r(rng, 0.06, 0.1, lsz, min_r)
    b = max(rng.uniform(0.035, 0.055) * lsz, min_r * 0.8)
    dis = [Prim(Ellipse(*wall(0.93), a, b, phi + _PI / 2), T.CNV, within=(T.FLUID, T.RETINA),
                lesion=True),
           Prim(Ellipse(*wall(0.9, 0.12), a * 0.5, b * 0.5, phi + _PI / 2), T.FLUID,
                within=(T.CNV,), lesion=True)]
  info["target"] = wall(0.93) if dis else wall(rng.uniform(0.0, 0.9), rng.uniform(-1, 1))
  return Scene(anatomy, dis, globes, T.AIR, (), info)


# ---------------------------------------------------------------------------------------
# Abdomen: axial slice through liver, stomach, spleen and kidneys.


def abdomen(rng, var, disease, lsz, min_r, modality):
  """Axial upper abdomen: liver with vessels, stomach, spleen, kidneys, spine, bowel.

  liver_lesion: one to three round hypodense masses in the liver, sometimes necrotic.
  """
  del modality
  J = _jitter(rng, var)
  bx, by, cy = 0.93 + J(0.03), 0.7 + J(0.03), 0.06
  liver = Blob(-0.33 + J(0.03), cy - 0.1 + J(0.03), 0.42 + J(0.02), 1.2, J(0.2),
               rand_harmonics(rng, 0.08 * max(var, 0.3), (2, 3)))
  wall = Ellipse(0, cy, bx - 0.12, by - 0.12)
  anatomy = [
      Prim(Ellipse(0, cy, bx, by), T.SKIN), Prim(Ellipse(0, cy, bx - 0.02, by - 0.02), T.FAT),
      Prim(Ellipse(0, cy, bx - 0.08, by - 0.08), T.SOFT), Prim(wall, T.FAT),
      *_ribs_around(Ellipse(0, cy, bx - 0.09, by - 0.09), 16,
                    ((-_PI / 2, 1.2), (_PI / 2, 1.0)), rng, var),
      Prim(Ellipse(0, cy + 0.42, 0.12, 0.1), T.BONE), Prim(Ellipse(0, cy + 0.42, 0.1, 0.08),
                                                           T.MARROW),
      Prim(circle(0, cy + 0.54, 0.035), T.FLUID),
      Prim(Capsule(0, cy + 0.57, 0, cy + 0.62, 0.025), T.BONE),
      *[Prim(Ellipse(s * 0.19, cy + 0.54, 0.12, 0.08), T.SOFT) for s in (-1, 1)],
      *[Prim(Ellipse(s * 0.17, cy + 0.37, 0.07, 0.08), T.SOFT) for s in (-1, 1)],
      Prim(liver, T.LIVER, within=(T.FAT,)),
      Pattern(T.BLOOD, "ridges", 0.05, 0.05, within=(T.LIVER,)),
      Prim(Ellipse(-0.2 + J(0.02), cy + 0.12, 0.06, 0.09), T.FLUID, within=(T.LIVER, T.FAT)),
      Prim(Ellipse(0.58, cy + 0.22, 0.14, 0.22, 0.5), T.ORGAN, within=(T.FAT,)),
      *[Prim(Ellipse(s * 0.37, cy + 0.33, 0.1, 0.15, -s * 0.4), T.ORGAN, within=(T.FAT, T.LIVER))
        for s in (-1, 1)],
      *[Prim(Ellipse(s * 0.33, cy + 0.33, 0.035, 0.06, -s * 0.4), T.FAT) for s in (-1, 1)],
      Prim(circle(0.06, cy + 0.27, 0.05), T.BLOOD), Prim(Ellipse(-0.1, cy + 0.25, 0.055, 0.04),
                                                         T.BLOOD),
      Prim(Ellipse(0.32, cy - 0.2, 0.22, 0.17), T.SOFT, within=(T.FAT,)),
      Prim(Ellipse(0.32, cy - 0.2, 0.18, 0.13), T.FLUID, within=(T.SOFT,)),
      Prim(Ellipse(0.32, cy - 0.2, 0.18, 0.13), T.GAS, within=(T.FLUID,),
           clip=HalfPlane(0, 1, cy - 0.23 + J(0.02))),
      Pattern(T.SOFT, "spots", 0.05, 0.5, shape=Ellipse(0.12, cy + 0.06, 0.45, 0.3),
              within=(T.FAT,)),
      Pattern(T.GAS, "spots", 0.025, 1.6, shape=Ellipse(0.12, cy + 0.06, 0.45, 0.3),
              within=(T.SOFT,)),
  ]
  info = {"window": (50.0, 400.0), "us": ("radial", (0.05, cy)),
          "us_depth": US_DEPTH["abdomen"],
          "surface": Ellipse(0, cy, bx, by)}
  dis = []
  if disease == "liver_lesion":
    for i in range(1 + int(rng.integers(0, 3) * (rng.random() < 0.4))):
      rad, ang = liver.r * rng.uniform(0, 0.5), rng.uniform(0, 2 * _PI)
      c = (liver.cx + rad * math.cos(ang) * 1.1, liver.cy + rad * math.sin(ang) * 0.9)
      r = _lesion_r(rng, 0.05, 0.1, lsz, min_r) * (1.0 if i == 0 else 0.7)
      dis.append(Prim(Blob(*c, r, rng.uniform(0.8, 1.25), 0.0, rand_harmonics(rng, 0.08)),
                      T.LIVER_LESION, within=(T.LIVER, T.BLOOD, T.FLUID), lesion=True))
      if i == 0:
        target = c
        if rng.random() < 0.35:
          dis.append(Prim(circle(*c, r * 0.45), T.NECROSIS, within=(T.LIVER_LESION,),
                          lesion=True))
    info["target"] = target
  else:
    info["target"] = (liver.cx + rng.uniform(-0.15, 0.15), liver.cy + rng.uniform(-0.15, 0.15))
  return Scene(anatomy, dis, [liver], T.AIR, (), info)


SLICE_TEMPLATES = {"brain": brain, "breast": breast, "chest": chest, "retina": retina,
                   "abdomen": abdomen}
