"""Per-sub-network training views: image-only randomisations computed on the device.

Objective 4 needs sub-codes that each depend on their own characteristic only. Independent
parameters are not enough (`dnh_jax.models.independent`): an organ network happily reads
the modality's texture when every modality came with one organ in training. A *view* takes
away the cues a network must not use, so it cannot learn them:

* `contrast`  (organ and disease networks) - appearance randomisation in the spirit of
  SynthSeg's contrast randomisation (Billot et al., Medical Image Analysis 2023): a random
  non-monotonic intensity lookup table per image, a random gamma, a smooth multiplicative
  bias field, a random Gaussian blur and additive noise, then a min-max rescale. What
  survives is shape and layout - anatomy, lesions - not the modality's grey levels.
* `patches`   (modality network) - the image cut into `patch` x `patch` tiles, shuffled by
  a random permutation per image: local texture (noise grain, speckle, grey levels) stays,
  anatomy (where the organ is, its outline) is gone.
* `identity`  the image itself.

Every view is a pure function of (key, images) on float32[B, H, W, C] images in [0, 1],
jit- and vmap-friendly, so it runs inside the jitted train step on any backend with no
host work. The trainer derives the key from (seed, step) with `fold_in`, so a view is
deterministic per step and a resumed run sees the same views.

Views at inference (`test_view`): `contrast` is a training-only randomisation, so a test
image is seen as it is (identity); `patches` is seen with ONE fixed permutation (the same
for every image, from a fixed key). A network trained only on shuffled tiles has never
seen an intact image: the intact image is out of its training distribution (long straight
anatomy across tile borders), whereas a fixed shuffle is one draw of the very distribution
it was trained on, and it is deterministic, so the same image always gets the same code.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# The fixed permutation of the `patches` view at inference.
TEST_PATCH_KEY = 0x7E57


def identity(key: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  """The images unchanged. Args: key (unused), images float32[B, H, W, C]."""
  del key
  return images


def random_lut(key: jax.Array, images: jnp.ndarray, knots: int = 6) -> jnp.ndarray:
  """A random piecewise-linear intensity lookup table per image.

  Args:
    key: PRNG key.
    images: float32[B, H, W, C] in [0, 1].
    knots: number of equally spaced input levels whose outputs are drawn U(0, 1) per
      image (not sorted: the table may invert or fold the grey scale).

  Returns:
    float32[B, H, W, C] in [0, 1].
  """
  xs = jnp.linspace(0.0, 1.0, knots)
  ys = jax.random.uniform(key, (images.shape[0], knots))
  return jax.vmap(lambda im, y: jnp.interp(jnp.clip(im, 0.0, 1.0), xs, y))(images, ys)


def random_gamma(key: jax.Array, images: jnp.ndarray, log_sigma: float = 0.4) -> jnp.ndarray:
  """x ** gamma per image, log(gamma) ~ N(0, log_sigma^2). Images float32[B, H, W, C] in
  [0, 1] -> same shape, in [0, 1]."""
  gamma = jnp.exp(log_sigma * jax.random.normal(key, (images.shape[0], 1, 1, 1)))
  return jnp.power(jnp.clip(images, 1e-6, 1.0), gamma)


def bias_field(key: jax.Array, images: jnp.ndarray, strength: float = 0.3,
               grid: int = 4) -> jnp.ndarray:
  """Multiplies each image by exp(f), f a smooth random field: N(0, strength^2) values on
  a `grid` x `grid` lattice, resized bilinearly to the image. Images float32[B, H, W, C]
  -> same shape (not clipped)."""
  b, h, w, c = images.shape
  coarse = strength * jax.random.normal(key, (b, grid, grid, 1))
  field = jax.image.resize(coarse, (b, h, w, 1), method="bilinear")
  return images * jnp.exp(field)


def gaussian_blur(key: jax.Array, images: jnp.ndarray, max_sigma: float = 1.0,
                  radius: int = 2) -> jnp.ndarray:
  """Separable Gaussian blur with sigma ~ U(0, max_sigma) per image (sigma 0: unchanged).

  Args:
    key: PRNG key.
    images: float32[B, H, W, C].
    max_sigma: largest blur, in pixels.
    radius: kernel half-width (2 * radius + 1 taps), edges reflected.

  Returns:
    float32[B, H, W, C].
  """
  sigma = jax.random.uniform(key, (images.shape[0],), maxval=max_sigma)
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * jnp.square(taps[None, :] / jnp.maximum(sigma[:, None], 1e-3)))
  weights = weights / weights.sum(axis=1, keepdims=True)         # [B, T]
  padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)),
                   mode="reflect")
  h, w = images.shape[1:3]
  rows = sum(weights[:, i, None, None, None] * padded[:, i:i + h, :, :]
             for i in range(2 * radius + 1))
  return sum(weights[:, i, None, None, None] * rows[:, :, i:i + w, :]
             for i in range(2 * radius + 1))


def contrast_randomize(key: jax.Array, images: jnp.ndarray, *, knots: int = 6,
                       log_gamma_sigma: float = 0.4, bias_strength: float = 0.3,
                       max_blur: float = 1.0, max_noise: float = 0.05) -> jnp.ndarray:
  """The `contrast` view: LUT, gamma, bias field, blur, noise, then min-max rescale.

  Args:
    key: PRNG key.
    images: float32[B, H, W, C] in [0, 1].
    knots, log_gamma_sigma, bias_strength, max_blur: see `random_lut`, `random_gamma`,
      `bias_field`, `gaussian_blur`.
    max_noise: additive Gaussian noise with sigma ~ U(0, max_noise) per image.

  Returns:
    float32[B, H, W, C], each image rescaled to [0, 1] (a constant image becomes 0).
  """
  k_lut, k_gamma, k_bias, k_blur, k_sigma, k_noise = jax.random.split(key, 6)
  x = random_lut(k_lut, images, knots)
  x = random_gamma(k_gamma, x, log_gamma_sigma)
  x = bias_field(k_bias, x, bias_strength)
  x = gaussian_blur(k_blur, x, max_blur)
  sigma = jax.random.uniform(k_sigma, (images.shape[0], 1, 1, 1), maxval=max_noise)
  x = x + sigma * jax.random.normal(k_noise, x.shape)
  lo = x.min(axis=(1, 2, 3), keepdims=True)
  hi = x.max(axis=(1, 2, 3), keepdims=True)
  return (x - lo) / jnp.maximum(hi - lo, 1e-6)


def _tiles(images: jnp.ndarray, patch: int) -> jnp.ndarray:
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"views: patch={patch} must divide the image size {h}x{w} "
                     "(model.view_patch)")
  t = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return t.reshape(b, (h // patch) * (w // patch), patch, patch, c)


def _untile(tiles: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
  b, _, p, _, c = tiles.shape
  t = tiles.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return t.reshape(b, h, w, c)


def patch_shuffle(key: jax.Array, images: jnp.ndarray, patch: int = 8, *,
                  shared: bool = False) -> jnp.ndarray:
  """The `patches` view: `patch` x `patch` tiles in a random order.

  Args:
    key: PRNG key.
    images: float32[B, H, W, C]; `patch` must divide H and W.
    patch: tile side in pixels.
    shared: one permutation for the whole batch (the inference view) instead of one per
      image.

  Returns:
    float32[B, H, W, C]: the same pixels (a permutation of the tiles of each image).
  """
  b, h, w, _ = images.shape
  tiles = _tiles(images, patch)
  n = tiles.shape[1]
  scores = jax.random.uniform(key, (1 if shared else b, n))
  order = jnp.broadcast_to(jnp.argsort(scores, axis=1), (b, n))
  tiles = jnp.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
  return _untile(tiles, h, w)


def fixed_patch_shuffle(images: jnp.ndarray, patch: int = 8) -> jnp.ndarray:
  """The inference view of `patches`: one fixed permutation (TEST_PATCH_KEY) for every
  image. Images float32[B, H, W, C] -> same shape."""
  return patch_shuffle(jax.random.key(TEST_PATCH_KEY), images, patch, shared=True)


# name -> (training view (key, images, patch) -> images, inference view (images, patch)).
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda key, x, patch: x, lambda x, patch: x),
    "contrast": (lambda key, x, patch: contrast_randomize(key, x), lambda x, patch: x),
    "patches": (lambda key, x, patch: patch_shuffle(key, x, patch), fixed_patch_shuffle),
}


def check_views(views, count: int) -> tuple[str, ...]:
  """Validates `model.views`: () (identity for all) or one name of VIEWS per network."""
  views = tuple(views)
  if not views:
    return ("identity",) * count
  if len(views) != count:
    raise ValueError(f"model.views={views} must name one view per sub-network ({count}); "
                     f"choose from {sorted(VIEWS)}")
  for v in views:
    if v not in VIEWS:
      raise ValueError(f"model.views entry {v!r} is not valid; choose from {sorted(VIEWS)}")
  return views


def apply_views(views: tuple[str, ...], images: jnp.ndarray, *, key: jax.Array | None,
                patch: int) -> jnp.ndarray:
  """One view of the batch per network.

  Args:
    views: one name of VIEWS per network (C of them).
    images: float32[B, H, W, C_img].
    key: PRNG key (training views; network i uses fold_in(key, i)), or None for the
      inference views.
    patch: tile side of the `patches` view.

  Returns:
    float32[C, B, H, W, C_img].
  """
  out = []
  for i, name in enumerate(views):
    train_view, test_view = VIEWS[name]
    out.append(test_view(images, patch) if key is None
               else train_view(jax.random.fold_in(key, i), images, patch))
  return jnp.stack(out)
