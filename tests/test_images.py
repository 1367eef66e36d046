"""Image reading and normalisation: any size, bit depth and channel count -> uint8[S, S, 1]."""

import numpy as np
import pytest
from PIL import Image

from dnh_jax.data import images


def test_uint8_gray_is_kept_and_resized():
  img = np.full((28, 28), 77, np.uint8)
  out = images.normalize_image(img, 64)
  assert out.shape == (64, 64, 1) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, 77)   # uint8 intensities are not re-windowed


def test_same_size_uint8_is_identity():
  img = np.random.default_rng(0).integers(0, 256, (32, 32, 1)).astype(np.uint8)
  np.testing.assert_array_equal(images.normalize_image(img, 32), img)


@pytest.mark.parametrize("dtype,lo,hi", [(np.int16, -1024, 3071), (np.uint16, 0, 65535),
                                         (np.float32, -0.5, 2.5), (np.int32, 5, 9)])
def test_other_depths_are_windowed_to_full_range(dtype, lo, hi):
  ramp = np.linspace(lo, hi, 40 * 40).reshape(40, 40).astype(dtype)
  out = images.normalize_image(ramp, 40)[..., 0]
  assert out.min() == 0 and out.max() == 255
  # Monotone: brighter input stays brighter.
  assert np.all(np.diff(out.reshape(-1).astype(int)) >= 0)


def test_hot_pixel_does_not_crush_contrast():
  img = np.tile(np.arange(100, dtype=np.uint16), (100, 1))
  img[0, 0] = 60000   # one outlier: percentile windowing ignores it
  out = images.normalize_image(img, 100)[..., 0]
  assert out[50, 90] > 200 and out[50, 10] < 50


def test_constant_and_nan_images():
  assert np.all(images.normalize_image(np.full((8, 8), 1000, np.int16), 8) == 0)
  img = np.ones((8, 8), np.float32)
  img[0, 0] = np.nan
  img[4:] = 2.0
  out = images.normalize_image(img, 8)
  assert out.dtype == np.uint8 and out[5, 5, 0] == 255


def test_rgb_rgba_and_channels_first_become_luminance():
  rgb = np.zeros((16, 16, 3), np.uint8)
  rgb[..., 1] = 200
  expected = round(0.587 * 200)
  assert np.all(images.normalize_image(rgb, 16) == expected)
  rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], -1)
  assert np.all(images.normalize_image(rgba, 16) == expected)
  chw = np.moveaxis(rgb, -1, 0)
  assert np.all(images.normalize_image(chw, 16) == expected)


def test_non_square_is_padded_centred():
  img = np.full((10, 20), 255, np.uint8)
  out = images.normalize_image(img, 20)[..., 0]
  assert np.all(out[:5] == 0) and np.all(out[15:] == 0) and np.all(out[5:15] == 255)


def test_bool_and_downsampling():
  img = np.zeros((300, 300), bool)
  img[:, 150:] = True
  out = images.normalize_image(img, 30)[..., 0]
  assert out[0, 0] == 0 and out[0, -1] == 255


def test_volume_and_bad_input_raise_naming_source():
  with pytest.raises(ValueError, match=r"scan\.npy.*\(5, 6, 7\)"):
    images.normalize_image(np.zeros((5, 6, 7)), 8, source="scan.npy")
  with pytest.raises(ValueError, match="empty"):
    images.normalize_image(np.zeros((0, 4)), 8)
  with pytest.raises(ValueError, match="dtype"):
    images.normalize_image(np.array([["a"]]), 8)


def test_read_png_8_and_16_bit_jpeg_npy(tmp_path):
  gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
  Image.fromarray(gray).save(tmp_path / "a.png")
  np.testing.assert_array_equal(images.read_image(str(tmp_path / "a.png")), gray)
  deep = (np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / "b.png")
  read = images.read_image(str(tmp_path / "b.png"))
  assert read.dtype in (np.uint16, np.int32) and read.max() == deep.max()
  Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "c.jpg")
  assert images.load_image(str(tmp_path / "c.jpg"), 32).shape == (32, 32, 1)
  ct = (np.arange(16 * 16).reshape(16, 16) * 10 - 1000).astype(np.int16)
  np.save(tmp_path / "d.npy", ct)
  out = images.load_image(str(tmp_path / "d.npy"), 16)
  assert out.min() == 0 and out.max() == 255


def test_read_bad_files_raise_naming_them(tmp_path):
  (tmp_path / "x.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="x.png"):
    images.read_image(str(tmp_path / "x.png"))
  (tmp_path / "y.npy").write_bytes(b"junk")
  with pytest.raises(ValueError, match="y.npy"):
    images.read_image(str(tmp_path / "y.npy"))
  with pytest.raises(ValueError, match=r"z\.gif.*expected one of"):
    images.read_image(str(tmp_path / "z.gif"))
