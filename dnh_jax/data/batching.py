"""Numpy training batches, deterministic per (seed, step), sliced per process.

The training stream is the concatenation of seeded permutations of the split, one per
epoch; the global batch of step s is positions [s * B, (s + 1) * B) of that stream, so a
batch depends only on (seed, step) - a resumed run sees exactly the batches an
uninterrupted one would. Process p of P takes the p-th contiguous slice of B / P
examples of the global batch; augmentation parameters are drawn for the whole global batch
and sliced the same way, so the union over processes equals the single-process batch.

Augmentations are plain numpy functions and label-preserving on medical images: small
translations and intensity gain/offset jitter. No flips (laterality is anatomy: a mirrored
chest X-ray shows dextrocardia) and no large crops (a lesion at the edge must stay).
"""

from __future__ import annotations

import numpy as np

from dnh_jax.data.pipeline import SplitData

_PERMUTATION_STREAM = 0xE90C   # spawn keys of the two random streams
_AUGMENT_STREAM = 0xA06


def images_to_float(images: np.ndarray) -> np.ndarray:
  """uint8[N, H, W, C] -> float32[N, H, W, C] in [0, 1]."""
  return np.divide(images, np.float32(255.0), dtype=np.float32)


def random_shift(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
  """Translates each image by whole pixels, filling with black.

  Args:
    images: float32[B, H, W, C].
    shifts: int[B, 2] (rows, columns); positive moves content down / right.

  Returns:
    float32[B, H, W, C].
  """
  out = np.zeros_like(images)
  h, w = images.shape[1:3]
  for i, (dy, dx) in enumerate(np.asarray(shifts, np.int64)):
    dy, dx = int(np.clip(dy, -h, h)), int(np.clip(dx, -w, w))
    out[i, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = (
        images[i, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)])
  return out


def intensity_jitter(images: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
  """Per-image affine intensity change, clipped to [0, 1].

  Args:
    images: float32[B, H, W, C] in [0, 1].
    gain, offset: float[B].

  Returns:
    float32[B, H, W, C]: clip(images * gain + offset, 0, 1).
  """
  gain = np.asarray(gain, np.float32).reshape(-1, 1, 1, 1)
  offset = np.asarray(offset, np.float32).reshape(-1, 1, 1, 1)
  return np.clip(images * gain + offset, 0.0, 1.0)


def augmentation_params(rng: np.random.Generator, batch_size: int, image_size: int, *,
                        max_shift_fraction: float = 1 / 16, gain: float = 0.1,
                        offset: float = 0.05) -> dict[str, np.ndarray]:
  """Draws {"shift": int64[B, 2], "gain": float32[B], "offset": float32[B]}."""
  max_shift = int(round(max_shift_fraction * image_size))
  return {
      "shift": rng.integers(-max_shift, max_shift + 1, size=(batch_size, 2)),
      "gain": rng.uniform(1.0 - gain, 1.0 + gain, size=batch_size).astype(np.float32),
      "offset": rng.uniform(-offset, offset, size=batch_size).astype(np.float32),
  }


def augment(images: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
  """Applies `augmentation_params` to float32[B, H, W, C] images in [0, 1]."""
  return intensity_jitter(random_shift(images, params["shift"]), params["gain"],
                          params["offset"])


class Batcher:
  """Deterministic per-(seed, step) batches of one split for one process.

  Args:
    split: the examples (usually the train split).
    global_batch_size: B, summed over processes; must be divisible by `process_count`.
    seed: non-negative integer.
    augment: apply `augment` to the images.
    process_index, process_count: this process's slice of each global batch.
  """

  def __init__(self, split: SplitData, global_batch_size: int, *, seed: int, augment: bool,
               process_index: int = 0, process_count: int = 1):
    if len(split) == 0:
      raise ValueError("Batcher: the split is empty; check data.split and the dataset size")
    if global_batch_size < 1:
      raise ValueError(f"train.batch_size={global_batch_size}: expected a positive integer")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must lie in [0, process_count="
                       f"{process_count})")
    if global_batch_size % process_count:
      raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the "
                       f"{process_count} processes")
    if int(seed) != seed or seed < 0:
      raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    self.split = split
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.augment = bool(augment)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self._permutations: dict[int, np.ndarray] = {}

  @property
  def num_examples(self) -> int:
    return len(self.split)

  def permutation(self, epoch: int) -> np.ndarray:
    """int64[N]: the order of the split in `epoch` (a pure function of seed, epoch)."""
    if epoch not in self._permutations:
      if len(self._permutations) >= 4:   # a batch spans at most a few epochs
        self._permutations.pop(min(self._permutations))
      rng = np.random.default_rng(
          np.random.SeedSequence(self.seed, spawn_key=(_PERMUTATION_STREAM, epoch)))
      self._permutations[epoch] = rng.permutation(self.num_examples)
    return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    """int64[B_local]: indices into the split of this process's part of batch `step`."""
    if int(step) != step or step < 0:
      raise ValueError(f"step={step!r}: expected a non-negative integer")
    start = int(step) * self.global_batch_size + self.process_index * self.local_batch_size
    positions = start + np.arange(self.local_batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self.num_examples)
    out = np.empty(self.local_batch_size, np.int64)
    for epoch in np.unique(epochs):
      mask = epochs == epoch
      out[mask] = self.permutation(int(epoch))[offsets[mask]]
    return out

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of global batch `step`.

    Returns:
      {"image": float32[B_local, H, W, 1] in [0, 1], <characteristic>: int32[B_local] |
      uint8[B_local, V]}.
    """
    idx = self.indices(step)
    images = images_to_float(self.split.images[idx])
    if self.augment:
      rng = np.random.default_rng(
          np.random.SeedSequence(self.seed, spawn_key=(_AUGMENT_STREAM, int(step))))
      params = augmentation_params(rng, self.global_batch_size, images.shape[1])
      lo = self.process_index * self.local_batch_size
      local = {k: v[lo:lo + self.local_batch_size] for k, v in params.items()}
      images = augment(images, local)
    return {"image": images, **{k: v[idx] for k, v in self.split.labels.items()}}
