"""Views and image formation of the MedPhantom modalities.

A view maps output pixels to template coordinates (a posed CT / MRI / X-ray field of view,
an ultrasound fan aimed at a target, an OCT B-scan); image formation turns the painted
tissue map into the modality's image:

* CT: Hounsfield units, partial-volume blur, weak correlated noise, a display window,
  the circular reconstruction field and the patient table.
* MRI: T1 signal with tissue texture, a smooth multiplicative bias field and Rician noise
  (magnitude of complex Gaussian noise: a noise floor in the background).
* Ultrasound: computed along the beams of a curvilinear probe (rows = depth, columns =
  angle): speckle, specular echoes at impedance steps, attenuation with time-gain
  compensation (so fluid gives posterior enhancement and bone, gas and desmoplastic masses
  acoustic shadows), A-line reverberations below the pleura, B-lines under ground glass,
  log compression, then scan conversion into the fan-shaped field of view.
* OCT: reflectivity times fine speckle, depth attenuation (vessel shadows), log display.
X-ray projections are formed in `projection`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dnh_jax.data.medphantom import tissues as T
from dnh_jax.data.medphantom.core import Difficulty, F32, blur, clamp, grid, lowfreq
from dnh_jax.data.medphantom.paint import Painted, View, tissue_map

_FAN_HALF_ANGLE = 0.55      # radians, curvilinear probe
_FAN_APEX_RATIO = 0.3       # apex-to-skin distance / imaging depth


# ---------------------------------------------------------------------------------------
# Views.


def posed_grid(rng: np.random.Generator, size: int, var: float, center=(0.0, 0.0),
               zoom: float = 1.0, warp: float = 0.02) -> View:
  """A field of view with random pose (rotation, scale, aspect, shift, smooth warp)."""
  X0, Y0 = grid(size, size)
  ang = clamp(rng.normal(0, 0.1) * var, -0.35, 0.35)
  s = zoom * clamp(1 + rng.normal(0, 0.06) * var, 0.8, 1.2)
  asp = clamp(1 + rng.normal(0, 0.04) * var, 0.9, 1.1)
  tx, ty = (clamp(v, -0.12, 0.12) for v in rng.normal(0, 0.05, 2) * var)
  c, sn = math.cos(ang), math.sin(ang)
  dx, dy = X0 - F32(tx), Y0 - F32(ty)
  X = (F32(c) * dx + F32(sn) * dy) * F32(1 / (s * asp)) + F32(center[0])
  Y = (F32(c) * dy - F32(sn) * dx) * F32(asp / s) + F32(center[1])
  if warp * var > 0:
    X = X + F32(warp * var) * lowfreq(rng, X.shape)
    Y = Y + F32(warp * var) * lowfreq(rng, X.shape)
  # Template point -> pixel (row, col): the inverse of the pose, an affine map.
  k = 0.5 * size
  ax, ay, bx, by = c * s * asp, -sn * s / asp, sn * s * asp, c * s / asp
  gx0 = tx - ax * center[0] - ay * center[1]
  gy0 = ty - bx * center[0] - by * center[1]
  affine = ((gy0 + 1) * k - 0.5, bx * k, by * k, (gx0 + 1) * k - 0.5, ax * k, ay * k)
  return View(X, Y, 2.0 / (size * s), rng, affine, margin=4.0 * warp * var)


def _ray_exit(ellipse, p, u):
  """t >= 0 where p + t u leaves `ellipse` (p inside; 0 if p is outside)."""
  dx, dy = p[0] - ellipse.cx, p[1] - ellipse.cy
  c, s = ellipse.cos, ellipse.sin
  px, py = (c * dx + s * dy) / ellipse.a, (c * dy - s * dx) / ellipse.b
  ux, uy = (c * u[0] + s * u[1]) / ellipse.a, (c * u[1] - s * u[0]) / ellipse.b
  a, b, cc = ux * ux + uy * uy, 2 * (px * ux + py * uy), px * px + py * py - 1
  disc = b * b - 4 * a * cc
  if cc >= 0 or disc < 0:
    return 0.0
  return (-b + math.sqrt(disc)) / (2 * a)


def fan_view(info: dict, rng: np.random.Generator, size: int, var: float,
             target_r: float) -> View:
  """Polar grid of an ultrasound fan aimed at info['target'].

  Rows are depth from the skin, columns beam angles; probe placement follows info['us']:
  ('radial', centre) puts the probe on info['surface'] where the line from centre through
  the target leaves it; ('fixed', point) uses an acoustic window (neonatal fontanelle).
  """
  tx, ty = info["target"]
  mode, ref = info["us"]
  tilt = clamp(rng.normal(0, 0.12) * var, -0.3, 0.3)
  if mode == "fixed":
    probe = ref
    ux, uy = tx - probe[0], ty - probe[1]
  else:
    ox, oy = tx - ref[0], ty - ref[1]
    n = math.hypot(ox, oy) or 1.0
    ox, oy = ox / n, oy / n
    ox, oy = ox * math.cos(tilt) - oy * math.sin(tilt), ox * math.sin(tilt) + oy * math.cos(tilt)
    t = _ray_exit(info["surface"], (tx, ty), (ox, oy))
    probe = (tx + t * ox, ty + t * oy)
    ux, uy = -ox, -oy
  n = math.hypot(ux, uy) or 1.0
  ux, uy = ux / n, uy / n
  dist = math.hypot(tx - probe[0], ty - probe[1])
  depth = max(info["us_depth"] * clamp(1 + rng.normal(0, 0.08) * var, 0.8, 1.2),
              (dist + 1.6 * target_r) / 0.85)
  off = clamp(rng.normal(0, 0.25) * var, -0.5, 0.5) * _FAN_HALF_ANGLE
  off *= min(1.0, dist / depth + 0.2)
  co, so = math.cos(off), math.sin(off)
  ux, uy = ux * co - uy * so, ux * so + uy * co  # the target lands off-centre by -off
  r0 = _FAN_APEX_RATIO * depth
  apex = (probe[0] - r0 * ux, probe[1] - r0 * uy)
  r = (r0 + (np.arange(size, dtype=F32) + 0.5) / size * depth)[:, None]
  phi = (np.arange(size, dtype=F32) + 0.5) / size * 2 * _FAN_HALF_ANGLE - _FAN_HALF_ANGLE
  dx = ux * np.cos(phi) + uy * np.sin(phi)
  dy = -ux * np.sin(phi) + uy * np.cos(phi)
  X = F32(apex[0]) + r * dx[None, :].astype(F32)
  Y = F32(apex[1]) + r * dy[None, :].astype(F32)
  return View(X, Y, depth / size, rng,
              polar=(apex[0], apex[1], ux, uy, r0, depth, _FAN_HALF_ANGLE))


@functools.lru_cache(maxsize=32)
def _fan(size: int):
  """Scan conversion of a [size, size] polar image into the fan (bilinear weights)."""
  X0, Y0 = (a.astype(np.float64) for a in grid(size, size))
  d_out = 1.94
  rho0 = _FAN_APEX_RATIO * d_out
  ya = -0.97 - rho0
  rho = np.hypot(X0, Y0 - ya)
  phi = np.arctan2(X0, Y0 - ya)
  row = (rho - rho0) / d_out * size - 0.5
  col = (phi + _FAN_HALF_ANGLE) / (2 * _FAN_HALF_ANGLE) * size - 0.5
  valid = (rho >= rho0) & (rho <= rho0 + d_out) & (np.abs(phi) <= _FAN_HALF_ANGLE)
  row, col = np.clip(row[valid], 0, size - 1), np.clip(col[valid], 0, size - 1)
  r0, c0 = np.minimum(row.astype(int), size - 2), np.minimum(col.astype(int), size - 2)
  wr, wc = (row - r0).astype(F32), (col - c0).astype(F32)
  i00 = r0 * size + c0
  return (np.flatnonzero(valid), (i00, i00 + 1, i00 + size, i00 + size + 1),
          ((1 - wr) * (1 - wc), (1 - wr) * wc, wr * (1 - wc), wr * wc))


def fan_convert(polar: np.ndarray) -> np.ndarray:
  """Polar [size, size] (rows depth, columns angle) -> fan image [size, size]."""
  size = polar.shape[0]
  where, idx, w = _fan(size)
  flat = polar.reshape(-1)
  out = np.zeros(size * size, F32)
  out[where] = sum(wk * flat[ik] for ik, wk in zip(idx, w))
  return out.reshape(size, size)


def fan_mask(mask: np.ndarray) -> np.ndarray:
  """A polar bool mask carried into the fan (nearest: > half of the bilinear weight)."""
  return fan_convert(mask.astype(F32)) > 0.5


# ---------------------------------------------------------------------------------------
# Image formation. Each returns float32[H, W] in [0, 1].


def form_ct(p: Painted, info: dict, rng, diff: Difficulty) -> np.ndarray:
  """CT image float32[H, W] in [0, 1] from a painted slice (info['window'] = level, width)."""
  size = p.labels.shape[0]
  level, width = info["window"]
  hu = tissue_map(T.PROPS["ct"], p, diff.lesion_contrast)
  hu = hu + T.PROPS["tex"][p.labels] * F32(0.15 * width) * p.noise(1.0)
  hu = blur(hu, 0.55)
  jit = min(diff.noise, 2.0)  # acquisition settings vary with the noise knob too
  level += rng.normal(0, 0.03) * width * jit
  width *= clamp(1 + rng.normal(0, 0.05) * jit, 0.85, 1.15)
  X0, Y0 = grid(size, size)
  table = (np.abs(Y0 - F32(0.9 + 0.08 * X0 ** 2)) < 0.02) & (np.abs(X0) < 0.8)
  hu = np.where(table & (p.labels == T.AIR), F32(150.0), hu)
  hu = hu + F32(0.015 * width * diff.noise) * p.noise(0.5)
  hu = np.where(X0 * X0 + Y0 * Y0 > 0.985, F32(-1024.0), hu)
  return np.clip((hu - F32(level - width / 2)) * F32(1 / width), 0.0, 1.0)


def form_mri(p: Painted, info: dict, rng, diff: Difficulty) -> np.ndarray:
  """T1-weighted MR magnitude image float32[H, W] in [0, 1] from a painted slice."""
  del info
  sig = tissue_map(T.PROPS["mri"], p, diff.lesion_contrast)
  sig = sig * (1 + T.PROPS["tex"][p.labels] * F32(0.6) * p.noise(1.0))
  sig = blur(np.maximum(sig, 0.0), 0.6)
  amp = 0.18 + 0.08 * diff.noise
  bias = np.exp(F32(amp) * lowfreq(rng, sig.shape, 3))
  sig = sig * bias
  ref = float(sig.max()) * (1 - rng.uniform(0, 0.15) * min(diff.noise, 1.0)) + 1e-3
  sd = F32((0.025 * diff.noise + 0.004) * ref)
  re = sig + sd * rng.standard_normal(sig.shape, dtype=F32)
  im = sd * rng.standard_normal(sig.shape, dtype=F32)
  return np.clip(np.sqrt(re * re + im * im) * F32(1 / ref), 0.0, 1.0)


def form_us(p: Painted, info: dict, rng, diff: Difficulty, ggo_tissue=T.GGO) -> np.ndarray:
  """Ultrasound on the polar grid (rows = depth); returns the polar image in [0, 1]."""
  del info
  h, w = p.labels.shape
  c = diff.lesion_contrast
  echo = tissue_map(T.PROPS["echo"], p, c)
  att = tissue_map(T.PROPS["uatt"], p, c)
  z = blur(tissue_map(T.PROPS["z"], p, c), 0.5, 0.3)
  echo = echo * np.maximum(1 + T.PROPS["tex"][p.labels] * p.noise(1.5), 0)
  z_prev = np.concatenate([z[:1], z[:-1]], axis=0)
  refl = np.abs(z - z_prev) / (z + z_prev + F32(0.05))
  loss = att * F32(1.0 / h) + F32(1.5) * refl
  trans = np.exp(loss - np.cumsum(loss, axis=0))  # energy reaching each row
  depth = ((np.arange(h, dtype=F32) + 0.5) / h)[:, None]
  tgc = np.exp(F32(1.4) * depth)
  k = 0.5 + 0.5 * min(diff.noise, 1.0)  # fully developed speckle at noise >= 1
  sa = max(0.6, h / 110)  # speckle grain: a fixed fraction of the field of view
  a, b = p.noise(sa, 1.7 * sa), p.noise(sa, 1.7 * sa)
  env = F32(1 - k) + F32(k * 0.8) * np.sqrt(a * a + b * b)
  sig = (echo * env + F32(3.0) * refl * (F32(0.5) + F32(0.5) * env)) * trans
  # Reverberations: below the first gas / lung interface of each beam.
  gas = (p.labels == T.LUNG) | (p.labels == T.GAS)
  rows = np.arange(h, dtype=F32)[:, None]
  if gas.any():
    first = np.argmax(gas, axis=0).astype(F32)
    hit = gas.any(axis=0) & (first > 1)
    amp = np.where(hit, trans[np.maximum(first.astype(int) - 2, 0), np.arange(w)], 0)[None, :]
    lines = sum(F32(0.6 ** k_) * np.exp(-np.square(rows - k_ * first[None, :])) for k_ in (2, 3))
    sig = sig + F32(1.2) * amp * lines * env
    ggo = [wm for t, wm, _ in p.softs if t == ggo_tissue]
    if ggo:
      col = np.maximum.reduce([g.max(axis=0) for g in ggo]) * F32(c)
      j = np.arange(w, dtype=F32)
      comb = (0.5 + 0.5 * np.cos(j * F32(2 * math.pi * 5 / w) + F32(rng.uniform(0, 6.3)))) ** 12
      bl = (col * comb * hit)[None, :] * (rows > first[None, :])
      sig = sig + F32(0.6) * bl * env * amp
  sig = np.maximum(sig, 0) * tgc
  sig = sig + F32(0.02 * diff.noise) * np.abs(rng.standard_normal((h, w), dtype=F32))
  gain = math.exp(rng.uniform(-0.22, 0.22) * min(diff.noise, 1.5))
  return np.clip(np.log1p(F32(6.0 * gain) * sig) * F32(1 / math.log1p(12.0)), 0, 1)


def form_oct(p: Painted, info: dict, rng, diff: Difficulty) -> np.ndarray:
  """OCT B-scan float32[H, W] in [0, 1] (rows = depth) from a painted layer scene."""
  del info
  h, w = p.labels.shape
  c = diff.lesion_contrast
  refl = tissue_map(T.PROPS["oct"], p, c)
  att = tissue_map(T.PROPS["oatt"], p, c)
  refl = refl * np.maximum(1 + T.PROPS["tex"][p.labels] * p.noise(1.0, 1.5), 0)
  refl = blur(refl, 0.5, 0.7)
  trans = np.exp(F32(-2.0 / h) * np.cumsum(att, axis=0))
  rolloff = np.exp(F32(-0.6) * (np.arange(h, dtype=F32) / h))[:, None]
  # Averaged B-scans: log-normal speckle of moderate contrast, elongated laterally.
  k = 0.5 + 0.5 * min(diff.noise, 2.0)
  sa = max(0.5, h / 140)
  speckle = np.exp(F32(0.5 * k) * p.noise(sa, 1.8 * sa) - F32(0.12 * k * k))
  # Reflectivity is non-negative; a strong negative lesion contrast must not drive it below
  # zero (the log below would give NaN pixels).
  sig = np.maximum(refl, 0) * trans * rolloff * speckle
  sig = sig + F32(0.002 + 0.002 * diff.noise) * np.abs(rng.standard_normal((h, w), dtype=F32))
  db = np.log10(sig + F32(1e-4))
  lo, hi = (v + rng.normal(0, 0.05) * min(diff.noise, 2.0) for v in (-2.0, -0.1))
  return np.clip((db - F32(lo)) * F32(1 / (hi - lo)), 0, 1)
