"""Geometry, noise and painting primitives of the MedPhantom renderer.

An organ template lives in *template coordinates*: x right, y down, the organ roughly in
[-1, 1]^2, anterior (or superior, or the probe side) at the top. A view (CT slice, US fan,
...) is just a pair of float32 arrays X, Y of the output grid's shape giving, for every pixel,
the template point it shows; shapes are implicit functions evaluated on those arrays, so the
same anatomy can be rendered through any view at any size with vectorised numpy only.

Implicit functions follow one convention: `f(X, Y) < 1` inside, `f = 1` on the boundary, and
for round shapes `f` is the squared normalised radius (so `1 - f` is the squared depth of an
ellipsoid, which projection views use as a thickness profile).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

F32 = np.float32


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The knobs behind the scalar `difficulty` of the renderer.

  Attributes:
    noise: multiplier of each modality's acquisition noise and of the jitter of its
      acquisition settings (CT window, MRI scaling, ultrasound gain, X-ray exposure);
      0 = noiseless (speckle keeps half its contrast: it is tissue, not noise).
    anatomy_variation: multiplier of the random pose (rotation, scale, shift), shape warp,
      organ proportions and probe placement (0 = fixed pose and shapes; tissue textures
      still vary).
    lesion_contrast: multiplier of the property difference between a lesion and the tissue
      it replaces (1 = textbook sign; smaller = subtler).
    lesion_size: multiplier of lesion size (smaller = harder); lesions never drop below
      about 1.5 pixels of radius, so a labelled lesion always stays in the image.
  """

  noise: float = 1.0
  anatomy_variation: float = 1.0
  lesion_contrast: float = 1.0
  lesion_size: float = 1.0

  def __post_init__(self):
    limits = {"noise": (0.0, 5.0), "anatomy_variation": (0.0, 3.0),
              "lesion_contrast": (0.05, 3.0), "lesion_size": (0.2, 3.0)}
    for name, (lo, hi) in limits.items():
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not lo <= float(value) <= hi:
        raise ValueError(f"Difficulty.{name}={value!r}: expected a number in [{lo}, {hi}]")

  @classmethod
  def from_scalar(cls, x: float) -> "Difficulty":
    """One scalar to all knobs: 0 = easiest, 1 = default, larger = harder.

    noise and anatomy variation grow linearly with `x`; lesion contrast and size shrink as
    1.5 / (1 + x / 2) and 1.25 / (1 + x / 4) (both 1 at x = 1).
    """
    if not isinstance(x, (int, float)) or not math.isfinite(x) or not 0.0 <= x <= 3.0:
      raise ValueError(f"difficulty={x!r}: expected a number in [0, 3]")
    x = float(x)
    return cls(noise=x, anatomy_variation=x, lesion_contrast=1.5 / (1.0 + 0.5 * x),
               lesion_size=1.25 / (1.0 + 0.25 * x))


def as_difficulty(value: "float | Difficulty") -> Difficulty:
  """A `Difficulty` from a scalar (via `from_scalar`) or an existing `Difficulty`."""
  if isinstance(value, Difficulty):
    return value
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
    raise ValueError(f"difficulty={value!r}: expected a float or a Difficulty")
  return Difficulty.from_scalar(float(value))


# ---------------------------------------------------------------------------------------
# Grids, blur and noise. All caches are keyed by sizes only, so randomness never hides in
# a cache and rendering stays a pure function of the seed.


def _frozen(a: np.ndarray) -> np.ndarray:
  """Marks a cached array read-only, so no caller can corrupt the cache."""
  a.setflags(write=False)
  return a


@functools.lru_cache(maxsize=64)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in [-1, 1]: (X, Y), each float32[h, w] (read-only)."""
  x = ((np.arange(w, dtype=F32) + 0.5) / w * 2 - 1)
  y = ((np.arange(h, dtype=F32) + 0.5) / h * 2 - 1)
  X, Y = np.meshgrid(x, y)
  X.setflags(write=False)
  Y.setflags(write=False)
  return X, Y


@functools.lru_cache(maxsize=512)
def _gauss_matrix(n: int, sigma_q: int) -> tuple[np.ndarray, float]:
  """Row-normalised Gaussian blur matrix float32[n, n] for sigma = sigma_q / 4 pixels,
  and the std of one blurred unit white-noise sample (centre row)."""
  sigma = sigma_q / 4.0
  i = np.arange(n, dtype=np.float64)
  m = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
  m /= m.sum(axis=1, keepdims=True)
  return _frozen(m.astype(F32)), float(np.sqrt((m[n // 2] ** 2).sum()))


# OpenBLAS runs a GEMM on several threads once m * n * k reaches 4 * 65536; for the small
# blur matrices here that costs 10-20x more CPU than one thread (far worse on a busy
# machine), so bigger products are split into row blocks that each stay single-threaded.
_GEMM_SINGLE_THREAD = 4 * 65536


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a @ b for 2-D float32 arrays, in row blocks small enough for single-threaded BLAS."""
  m, k = a.shape
  n = b.shape[1]
  if m * n * k < _GEMM_SINGLE_THREAD:
    return a @ b
  rows = max(1, (_GEMM_SINGLE_THREAD - 1) // (n * k))
  out = np.empty((m, n), np.result_type(a, b))
  for i in range(0, m, rows):
    np.matmul(a[i:i + rows], b, out=out[i:i + rows])
  return out


def blur(img: np.ndarray, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
  """Separable Gaussian blur of float32[H, W] as two small matmuls (sigmas in pixels,
  quantised to 1/4 px; an axis with sigma < 0.2 px is left alone)."""
  sigma_x = sigma_y if sigma_x is None else sigma_x
  qy, qx = int(round(sigma_y * 4)), int(round(sigma_x * 4))
  out = img
  if qy >= 1:
    out = matmul(_gauss_matrix(img.shape[0], qy)[0], out)
  if qx >= 1:
    out = matmul(out, _gauss_matrix(img.shape[1], qx)[0].T)
  return out


@functools.lru_cache(maxsize=512)
def _noise_matrix(n_out: int, step: int, sigma_q: int) -> np.ndarray:
  """float32[n_out, ceil(n_out / step)]: Gaussian (sigma = sigma_q / 4 output pixels)
  interpolation of white noise drawn every `step` pixels, rows of unit L2 norm so every
  output pixel has unit variance (no darker edges)."""
  sigma = max(sigma_q, 1) / 4.0
  n_in = -(-n_out // step)
  i = np.arange(n_out, dtype=np.float64)[:, None] + 0.5
  j = (np.arange(n_in, dtype=np.float64)[None, :] + 0.5) * step
  m = np.exp(-0.5 * ((i - j) / sigma) ** 2)
  m /= np.sqrt((m ** 2).sum(axis=1, keepdims=True))
  return _frozen(m.astype(F32))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_y: float,
                 sigma_x: float | None = None) -> np.ndarray:
  """Gaussian-correlated noise float32[H, W] of unit variance (sigmas in pixels).

  Uniform white noise (three times cheaper to draw than normal; Gaussian to the eye once
  blurred) is drawn on a grid coarser by up to the blur radius, then interpolated with
  Gaussian weights: correlated noise costs a fraction of the samples and multiplies."""
  sigma_x = sigma_y if sigma_x is None else sigma_x
  qy, qx = int(round(sigma_y * 4)), int(round(sigma_x * 4))
  step = lambda q: 1 if q < 4 else min(q // 4 + 1, 4)  # <1 px: full grid; else ~sigma
  sy, sx = step(qy), step(qx)
  n = rng.random((-(-shape[0] // sy), -(-shape[1] // sx)), dtype=F32) - F32(0.5)
  n *= F32(math.sqrt(12.0))
  if qy >= 1:
    n = matmul(_noise_matrix(shape[0], sy, qy), n)
  if qx >= 1:
    n = matmul(n, _noise_matrix(shape[1], sx, qx).T)
  return n


class NoiseBank:
  """Smooth unit-variance noise fields for one image, several from each draw.

  A field, its mirror images and (square, isotropic fields) its transposes are
  uncorrelated to the eye, so one draw serves up to six textures; sigmas are rounded to
  half pixels so textures of similar grain share draws. Returned arrays are views: do
  not modify them in place.
  """

  def __init__(self, rng: np.random.Generator, shape: tuple[int, int]):
    self.rng, self.shape, self.cache = rng, shape, {}

  def __call__(self, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    sigma_x = sigma_y if sigma_x is None else sigma_x
    key = (round(sigma_y * 2) / 2, round(sigma_x * 2) / 2)
    entry = self.cache.get(key)
    variants = 6 if key[0] == key[1] and self.shape[0] == self.shape[1] else 4
    if entry is None or entry[1] >= variants:
      entry = self.cache[key] = [smooth_noise(self.rng, self.shape, *key), 0]
    n, k = entry
    entry[1] += 1
    return (n, n[::-1, ::-1], n[::-1], n[:, ::-1], n.T, n.T[::-1, ::-1])[k]


@functools.lru_cache(maxsize=64)
def _upsample_matrix(n_out: int, n_ctrl: int) -> np.ndarray:
  """Gaussian-RBF interpolation weights float32[n_out, n_ctrl] over [-1, 1]."""
  centers = np.linspace(-1.2, 1.2, n_ctrl)
  x = (np.arange(n_out) + 0.5) / n_out * 2 - 1
  w = np.exp(-0.5 * ((x[:, None] - centers[None, :]) / (2.4 / (n_ctrl - 1))) ** 2)
  w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
  return _frozen(w.astype(F32))


def lowfreq(rng: np.random.Generator, shape: tuple[int, int], n_ctrl: int = 4) -> np.ndarray:
  """A smooth field float32[H, W] of about unit std with ~n_ctrl bumps across the image
  (bias fields, shape warps)."""
  c = rng.standard_normal((n_ctrl, n_ctrl)).astype(F32)
  return matmul(_upsample_matrix(shape[0], n_ctrl) @ c, _upsample_matrix(shape[1], n_ctrl).T)


def clamp(x, lo: float, hi: float) -> float:
  """A Python float clipped to [lo, hi] (np.clip on scalars is slow)."""
  return min(max(float(x), lo), hi)


def clip01(t: np.ndarray) -> np.ndarray:
  """np.clip(t, 0, 1) without np.clip's Python-level dispatch (hot in rendering)."""
  return np.minimum(np.maximum(t, F32(0.0)), F32(1.0))


def smoothstep(t: np.ndarray) -> np.ndarray:
  t = clip01(t)
  return t * t * (F32(3.0) - F32(2.0) * t)


# ---------------------------------------------------------------------------------------
# Shapes: implicit functions f(X, Y), f < 1 inside.


class Ellipse:
  """Rotated ellipse; f is the squared normalised radius."""

  __slots__ = ("cx", "cy", "a", "b", "cos", "sin", "quad")

  def __init__(self, cx, cy, a, b, angle=0.0):
    self.cx, self.cy, self.a, self.b = float(cx), float(cy), float(a), float(b)
    self.cos, self.sin = math.cos(angle), math.sin(angle)
    self.quad = None

  def f(self, X, Y):
    dx, dy = X - F32(self.cx), Y - F32(self.cy)
    if self.sin:
      dx, dy = self.cos * dx + self.sin * dy, self.cos * dy - self.sin * dx
    return np.square(dx * F32(1 / self.a)) + np.square(dy * F32(1 / self.b))

  def quadratic(self) -> np.ndarray:
    """f as coefficients float32[6] on the basis (x^2, xy, y^2, x, y, 1)."""
    if self.quad is None:
      self.quad = self._quadratic()
    return self.quad

  def _quadratic(self) -> np.ndarray:
    c, s, ia, ib = self.cos, self.sin, 1 / self.a ** 2, 1 / self.b ** 2
    qa, qb, qc = c * c * ia + s * s * ib, 2 * c * s * (ia - ib), s * s * ia + c * c * ib
    x, y = self.cx, self.cy
    return np.array([qa, qb, qc, -2 * qa * x - qb * y, -qb * x - 2 * qc * y,
                     qa * x * x + qb * x * y + qc * y * y], F32)

  def bbox(self):
    hx = math.hypot(self.a * self.cos, self.b * self.sin)
    hy = math.hypot(self.a * self.sin, self.b * self.cos)
    return self.cx - hx, self.cx + hx, self.cy - hy, self.cy + hy

  def scaled(self, k: float, kb: float | None = None) -> "Ellipse":
    e = Ellipse(self.cx, self.cy, self.a * k, self.b * (k if kb is None else kb))
    e.cos, e.sin = self.cos, self.sin
    return e

  def point(self, phi: float, k: float = 1.0) -> tuple[float, float]:
    """The point at parameter angle phi (0 = +x, pi/2 = +y, i.e. down), scaled by k."""
    u, v = k * self.a * math.cos(phi), k * self.b * math.sin(phi)
    return self.cx + self.cos * u - self.sin * v, self.cy + self.sin * u + self.cos * v


def circle(cx, cy, r) -> Ellipse:
  return Ellipse(cx, cy, r, r)


class Blob:
  """Star-shaped lesion outline: an ellipse whose radius varies with angle.

  r(theta) = r * (1 + sum_k amp_k cos(k theta + phase_k) + spikes(theta)), where the
  spikes are narrow peaks (spiculated margins) at irregular angles: `spikes` is
  (count, length, sharpness (a power of two), phase, jitter) or None.
  """

  __slots__ = ("cx", "cy", "r", "sa", "cos", "sin", "harmonics", "spikes")

  def __init__(self, cx, cy, r, aspect=1.0, angle=0.0, harmonics=(), spikes=None):
    self.cx, self.cy, self.r = float(cx), float(cy), float(r)
    self.sa = math.sqrt(aspect)
    self.cos, self.sin = math.cos(angle), math.sin(angle)
    self.harmonics = tuple((int(k), float(a), float(p)) for k, a, p in harmonics)
    self.spikes = spikes  # (count, length, sharpness, phase, jitter) or None

  def bbox(self):
    extent = 1 + sum(abs(a) for _, a, _ in self.harmonics)
    if self.spikes is not None:
      extent += self.spikes[1]
    h = self.r * extent * max(self.sa, 1 / self.sa)
    return self.cx - h, self.cx + h, self.cy - h, self.cy + h

  def f(self, X, Y):
    dx, dy = X - F32(self.cx), Y - F32(self.cy)
    u = (self.cos * dx + self.sin * dy) * F32(1 / self.sa)
    v = (self.cos * dy - self.sin * dx) * F32(self.sa)
    rho2 = u * u + v * v
    if not self.harmonics and self.spikes is None:
      return rho2 * F32(1 / self.r ** 2)
    # Angular terms from powers of the unit complex number z = e^{i theta}: a handful of
    # complex multiplies instead of arctan2 and cosines (several times cheaper).
    inv = F32(1.0) / np.sqrt(rho2 + F32(1e-12))
    z = u * inv + np.complex64(1j) * (v * inv)
    rr = np.ones_like(rho2)
    if self.harmonics:
      coef = {k: a * complex(math.cos(p), math.sin(p)) for k, a, p in self.harmonics}
      lo, hi = min(coef), max(coef)
      poly = np.full(z.shape, np.complex64(coef[hi]))
      for k in range(hi - 1, lo - 1, -1):
        poly = poly * z + np.complex64(coef.get(k, 0.0))
      rr += (poly * cpow(z, lo)).real
    if self.spikes is not None:
      count, length, sharp, phase, jitter = self.spikes
      s3 = (cpow(z, 3) * np.complex64(complex(math.cos(1.7 * phase),
                                               math.sin(1.7 * phase)))).imag * F32(jitter)
      wave = (cpow(z, count) * np.complex64(complex(math.cos(phase), math.sin(phase)))
              * (np.cos(s3) + np.complex64(1j) * np.sin(s3))).real
      peak = F32(0.5) + F32(0.5) * wave
      for _ in range(int(round(math.log2(sharp)))):
        peak = peak * peak
      rr += F32(length) * peak
    return rho2 / np.square(F32(self.r) * np.maximum(rr, F32(0.2)))


def cpow(z, n: int):
  """z ** n for a positive integer n by repeated squaring (complex64 stays complex64)."""
  out, base = None, z
  while n:
    if n & 1:
      out = base if out is None else out * base
    n >>= 1
    if n:
      base = base * base
  return out


class Capsule:
  """Segment (x0, y0)-(x1, y1) thickened to half-width w; f = (distance / w)^2."""

  __slots__ = ("x0", "y0", "dx", "dy", "inv_l2", "w")

  def __init__(self, x0, y0, x1, y1, w):
    self.x0, self.y0, self.w = float(x0), float(y0), float(w)
    self.dx, self.dy = float(x1 - x0), float(y1 - y0)
    self.inv_l2 = 1.0 / max(self.dx ** 2 + self.dy ** 2, 1e-12)

  def bbox(self):
    x1, y1 = self.x0 + self.dx, self.y0 + self.dy
    return (min(self.x0, x1) - self.w, max(self.x0, x1) + self.w,
            min(self.y0, y1) - self.w, max(self.y0, y1) + self.w)

  def f(self, X, Y):
    px, py = X - F32(self.x0), Y - F32(self.y0)
    t = clip01((px * F32(self.dx) + py * F32(self.dy)) * F32(self.inv_l2))
    return (np.square(px - t * F32(self.dx)) + np.square(py - t * F32(self.dy))) * F32(
        1 / self.w ** 2)


class HalfPlane:
  """Points with nx * x + ny * y < c (f crosses 1 steeply at the line)."""

  __slots__ = ("nx", "ny", "c")

  def __init__(self, nx, ny, c):
    n = math.hypot(nx, ny)
    self.nx, self.ny, self.c = nx / n, ny / n, float(c)

  def bbox(self):
    return None

  def f(self, X, Y):
    return F32(1.0) + (F32(self.nx) * X + F32(self.ny) * Y - F32(self.c)) * F32(20.0)


def _columns(X):
  """X itself, or its first row when X is constant down the columns (a broadcast row):
  layer curves then cost one row instead of a whole image."""
  return X[:1] if X.strides[0] == 0 else X


class Below:
  """Points below a curve y = curve(x) (a layer whose top boundary is the curve)."""

  __slots__ = ("curve",)

  def __init__(self, curve):
    self.curve = curve

  def bbox(self):
    return None

  def f(self, X, Y):
    return F32(1.0) + (self.curve(_columns(X)) - Y) * F32(20.0)


class Band:
  """Points between two curves, top(x) < y < bottom(x)."""

  __slots__ = ("top", "bottom")

  def __init__(self, top, bottom):
    self.top, self.bottom = top, bottom

  def bbox(self):
    return None

  def f(self, X, Y):
    x = _columns(X)
    return F32(1.0) + np.maximum(self.top(x) - Y, Y - self.bottom(x)) * F32(20.0)


def rand_harmonics(rng: np.random.Generator, amp: float, orders=(2, 3, 4, 5)) -> list:
  """Random radial harmonics (order, amplitude, phase) for `Blob`, amplitude ~ amp / k."""
  return [(k, amp * rng.uniform(0.5, 1.2) / (k / 2.0), rng.uniform(0, 2 * np.pi))
          for k in orders]
