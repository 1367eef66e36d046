"""X-ray projection templates (skull, orbits, mammogram, abdomen) and radiograph display.

A radiograph shows the line integral of attenuation. Organs here are sums of ellipsoid-like
bodies whose projected path length is a dome, sqrt(1 - f) for the implicit function f of
their outline, so overlapping structures add as in a real projection: the skull's cortical
shell projects as a bright rim, sinuses and orbits as lucencies, a breast mass as a density
over the fibroglandular background. The chest, the main radiograph, is in `chest`.
"""

from __future__ import annotations

import math

import numpy as np

from dnh_jax.data.medphantom.core import (Blob, Capsule, Difficulty, Ellipse, F32, HalfPlane,
                                          blur, circle, rand_harmonics, smooth_noise,
                                          smoothstep)
from dnh_jax.data.medphantom.paint import dome


def shell(e: Ellipse, thickness: float) -> callable:
  """Projected path through an ellipsoidal shell of relative thickness (bright rim)."""
  inner = e.scaled(1 - thickness)
  return lambda X, Y: dome(e.f(X, Y)) - F32(1 - thickness) * dome(inner.f(X, Y))


def radiograph(path: np.ndarray, rng: np.random.Generator, diff: Difficulty, p0: float,
               noise=None) -> np.ndarray:
  """Detector response and processing of a path-length map -> float32 [0, 1].

  Film-like compression 1 - exp(-path / p0), a little scatter glow and edge enhancement
  (clinical unsharp masking), and quantum noise that grows where fewer photons arrive.
  """
  exposure = 1 + rng.uniform(-0.08, 0.08) * min(diff.noise, 2.0)
  v = F32(1.0) - np.exp(-np.maximum(path, 0) * F32(1 / (p0 * exposure)))
  v = blur(v, 0.6)
  glow = blur(v, max(2.0, v.shape[0] / 24))
  v = v + F32(0.35) * (v - glow)
  grain = noise(0.5) if noise is not None else smooth_noise(rng, v.shape, 0.5)
  v = v + F32(0.025 * diff.noise) * np.sqrt(np.maximum(v, 0) + F32(0.05)) * grain
  return np.clip(v, 0.0, 1.0)


def _lesion_r(rng, lo, hi, lsz, min_r):
  return max(rng.uniform(lo, hi) * lsz, min_r)


def skull(X, Y, rng, var, disease, diff, min_r, organ):
  """PA skull radiograph (organ 'brain') or an orbital view of it (organ 'retina')."""
  J = lambda s: float(s * var * rng.standard_normal())
  c, lsz = diff.lesion_contrast, diff.lesion_size
  hx, hy = 0.78 + J(0.02), 0.86 + J(0.02)
  head = Ellipse(0, -0.05, hx, hy)
  vault = Ellipse(0, -0.08, hx - 0.04, hy - 0.04)
  inner = vault.scaled(0.93)
  orbits = [Ellipse(s * (0.27 + J(0.01)), 0.2 + J(0.01), 0.15, 0.135) for s in (-1, 1)]
  P = F32(0.9) * dome(head.f(X, Y))
  P = P + F32(3.0) * shell(vault, 0.06)(X, Y)
  P = P - F32(0.12) * dome(Ellipse(0, -0.3, 0.16, 0.1).f(X, Y))
  for o in orbits:
    P = P - F32(0.35) * dome(o.f(X, Y)) + F32(0.8) * shell(o.scaled(1.1), 0.15)(X, Y)
  for s in (-1, 1):
    P = P - F32(0.3) * dome(Ellipse(s * 0.24, 0.47, 0.13, 0.12).f(X, Y))
    P = P + F32(0.45) * dome(Capsule(s * 0.1, 0.32, s * 0.64, 0.14, 0.05).f(X, Y))
  P = P - F32(0.4) * dome(Ellipse(0, 0.43, 0.09, 0.17).f(X, Y))
  P = P + F32(0.3) * dome(Capsule(0, 0.28, 0, 0.6, 0.012).f(X, Y))
  mand = Ellipse(0, 0.45, 0.55, 0.45)
  P = P + F32(0.8) * shell(mand, 0.12)(X, Y) * (HalfPlane(0, -1, -0.62).f(X, Y) < 1)
  P = P + F32(0.6) * dome(Capsule(-0.33, 0.7, 0.33, 0.7, 0.045).f(X, Y))
  lesion = np.zeros(X.shape, bool)
  L = F32(0.0)
  if organ == "brain":
    organ_mask = inner.f(X, Y) < 1
    if disease == "glioma":
      ctr = (rng.choice((-1, 1)) * rng.uniform(0.15, 0.4), rng.uniform(-0.5, -0.05))
      b = Blob(*ctr, _lesion_r(rng, 0.12, 0.18, lsz, min_r), 1.0, 0.0, rand_harmonics(rng, 0.2))
      f = b.f(X, Y)
      L = F32(0.22) * dome(f)
      lesion = f < 1
    elif disease == "meningioma":
      phi = rng.uniform(-math.pi + 0.5, -0.5)
      r = _lesion_r(rng, 0.1, 0.16, lsz, min_r)
      px, py = inner.point(phi)
      ctr = (px - math.cos(phi) * r * 0.7, py - math.sin(phi) * r * 0.7)
      f = circle(*ctr, r).f(X, Y)
      calc = smooth_noise(rng, X.shape, 0.8) > 1.0
      L = F32(0.3) * dome(f) * (1 + F32(0.8) * calc) + F32(0.4) * dome(
          Ellipse(px, py, r * 1.2, 0.04, phi + math.pi / 2).f(X, Y))
      lesion = f < 1
    elif disease == "pituitary_tumor":
      f = Ellipse(J(0.01), 0.1, *(2 * [_lesion_r(rng, 0.05, 0.08, lsz, min_r)])).f(X, Y)
      L = F32(0.35) * dome(f)
      lesion = f < 1
  else:
    side = int(rng.integers(2))
    o = orbits[side]
    organ_mask = (orbits[0].f(X, Y) < 1) | (orbits[1].f(X, Y) < 1)
    ctr = (o.cx + rng.uniform(-0.05, 0.05), o.cy + rng.uniform(-0.04, 0.04))
    if disease == "drusen":
      for _ in range(int(rng.integers(2, 5))):
        f = circle(ctr[0] + rng.normal(0, 0.03), ctr[1] + rng.normal(0, 0.03),
                   _lesion_r(rng, 0.015, 0.025, lsz, min_r)).f(X, Y)
        L = L + F32(0.8) * dome(f)
        lesion |= f < 1
    elif disease in ("dme", "cnv"):
      r = _lesion_r(rng, 0.04, 0.06, lsz, min_r) * (1.3 if disease == "cnv" else 1.0)
      f = Ellipse(*ctr, r, r * 0.8, rng.uniform(0, 3)).f(X, Y)
      L = F32(0.25 if disease == "cnv" else 0.18) * dome(f)
      lesion = f < 1
  return P + F32(c) * L, lesion, organ_mask


def mammogram(X, Y, rng, var, disease, diff, min_r):
  """Mediolateral-oblique mammogram: fatty breast, fibroglandular density, pectoralis."""
  J = lambda s: float(s * var * rng.standard_normal())
  c, lsz = diff.lesion_contrast, diff.lesion_size
  s = 1.0 if rng.random() < 0.5 else -1.0
  Xm = X * F32(s)
  breast = Ellipse(-1.1, J(0.05), 1.65 + J(0.05), 1.02 + J(0.04), J(0.05))
  fb = breast.f(Xm, Y)
  thick = smoothstep((F32(1.0) - fb) * F32(5.0))
  px = 2.0 / X.shape[0]
  # Fibroglandular tissue: clouds and strands (stretched toward the nipple), densest
  # behind the nipple and fading toward the skin.
  cloud = smooth_noise(rng, X.shape, 0.025 / px, 0.08 / px)
  amount = rng.uniform(-0.3, 0.3)
  dens = smoothstep(F32(0.45 + amount) + F32(0.3) * cloud + F32(0.9) * (F32(0.55) - fb))
  P = thick * (F32(0.7) + F32(0.9) * dens * (fb < 0.95))
  edge = 0.45 + J(0.05)
  pect = smoothstep((F32(edge) * (F32(0.2) - Y) - (Xm + F32(1.0))) * F32(12))
  P = P + F32(0.55) * thick * pect
  lesion = np.zeros(X.shape, bool)
  if disease in ("benign", "malignant"):
    ctr = (rng.uniform(-0.65, -0.1), rng.uniform(-0.3, 0.35) * breast.b)
    r = _lesion_r(rng, 0.06, 0.1, lsz, min_r)
    if disease == "benign":
      b = Blob(*ctr, r, rng.uniform(1.0, 1.4), rng.uniform(0, 3), rand_harmonics(rng, 0.04, (2, 3)))
    else:
      b = Blob(*ctr, r, rng.uniform(0.8, 1.2), rng.uniform(0, 3), rand_harmonics(rng, 0.12),
               (int(rng.integers(8, 14)), rng.uniform(0.8, 1.4), 16, rng.uniform(0, 6.3), 0.4))
    f = b.f(Xm, Y)
    L = F32(0.5) * dome(f)
    if disease == "malignant":
      L = L + F32(0.6) * (smooth_noise(rng, X.shape, 0.5) > 1.9) * (f < 1.5)
    P = P + F32(c) * L * thick
    lesion = (f < 1) & (fb < 1)
  return P, lesion, fb < 1


def abdomen_film(X, Y, rng, var, disease, diff, min_r):
  """Supine abdominal radiograph (KUB): spine, pelvis, liver shadow, bowel gas."""
  J = lambda s: float(s * var * rng.standard_normal())
  c, lsz = diff.lesion_contrast, diff.lesion_size
  px = 2.0 / X.shape[0]
  P = F32(1.5) * dome(Ellipse(0, 0.05, 1.15 + J(0.03), 1.5).f(X, Y))
  ax = np.abs(X - F32(J(0.02)))
  t = (Y + F32(1.0 + J(0.05))) * F32(1 / 0.24)
  block = smoothstep((F32(0.8) - (t - np.floor(t))) * F32(8)) * smoothstep(
      (F32(0.11) - ax) * F32(40))
  P = P + F32(0.45) * block * np.sqrt(np.maximum(1 - np.square(ax * F32(1 / 0.11)), 0))
  for sx in (-1, 1):
    wing = Ellipse(sx * 0.55, 1.05, 0.4, 0.38)
    P = P + (F32(0.2) * dome(wing.f(X, Y)) + F32(0.4) * shell(wing, 0.1)(X, Y))
    for k in range(2):
      P = P + F32(0.35) * dome(Capsule(sx * 0.15, -0.98 + 0.16 * k, sx * 0.95,
                                       -0.62 + 0.16 * k, 0.03).f(X, Y))
  liver = Blob(-0.45 + J(0.03), -0.55 + J(0.03), 0.5, 1.3, 0.2, rand_harmonics(rng, 0.05, (2,)))
  P = P + F32(0.25) * dome(liver.f(X, Y))
  for sx in (-1, 1):
    P = P + F32(0.1) * dome(Ellipse(sx * 0.3, -0.2, 0.1, 0.18, sx * 0.25).f(X, Y))
  colon = np.minimum.reduce([Capsule(-0.62, 0.55, -0.62, -0.3, 0.13).f(X, Y),
                             Capsule(-0.62, -0.3, 0.62, -0.35, 0.12).f(X, Y),
                             Capsule(0.62, -0.35, 0.62, 0.55, 0.13).f(X, Y)])
  gas = smoothstep(smooth_noise(rng, X.shape, 0.06 / px) - F32(0.2)) * (colon < 1)
  small = smoothstep(smooth_noise(rng, X.shape, 0.035 / px) - F32(1.0)) * (
      Ellipse(0, 0.25, 0.4, 0.35).f(X, Y) < 1)
  P = P - F32(0.55) * blur(gas.astype(F32), 0.8) - F32(0.35) * small
  P = P - F32(0.5) * dome(Ellipse(0.35, -0.72, 0.15, 0.1).f(X, Y))
  lesion = np.zeros(X.shape, bool)
  if disease == "liver_lesion":
    r = _lesion_r(rng, 0.07, 0.12, lsz, min_r)
    ctr = (liver.cx + rng.uniform(-0.2, 0.2), liver.cy + rng.uniform(-0.15, 0.15))
    e = circle(*ctr, r)
    f = e.f(X, Y)
    L = F32(0.25) * dome(f)
    if rng.random() < 0.5:
      L = L + F32(0.5) * shell(e, 0.2)(X, Y)
    P = P + F32(c) * L
    lesion = f < 1
  return P, lesion, liver.f(X, Y) < 1


PROJECTIONS = {  # organ -> (template, display p0, view zoom, view centre)
    "brain": (lambda *a: skull(*a, organ="brain"), 1.2, 1.0, (0.0, 0.0)),
    "retina": (lambda *a: skull(*a, organ="retina"), 1.2, 1.7, (0.0, 0.18)),
    "breast": (mammogram, 0.75, 1.0, (0.0, 0.0)),
    "abdomen": (abdomen_film, 1.6, 1.0, (0.0, 0.0)),
}
