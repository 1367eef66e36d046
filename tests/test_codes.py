"""pack_codes / unpack_codes: layout contract and round trips."""

import jax.numpy as jnp
import numpy as np
import pytest

from dnh_jax.retrieval import codes


def test_hand_packed_word():
  # Code (+, -, +, +): bits 1, 0, 1, 1 at positions 0..3 -> 1 + 4 + 8 = 13.
  packed = codes.pack_codes(np.array([[0.5, -2.0, 0.0, 3.0]]))
  assert packed.dtype == np.uint32 and packed.tolist() == [[13]]


def test_bit_32_goes_to_second_word():
  # K = 33, only bit 32 set: word 0 = 0, word 1 = 1 (LSB first); 31 unused bits are 0.
  c = -np.ones((1, 33))
  c[0, 32] = 1.0
  assert codes.pack_codes(c).tolist() == [[0, 1]]


def test_sign_zero_is_plus_one():
  assert codes.pack_codes(np.zeros((1, 5))).tolist() == [[31]]
  assert codes.sign_codes(np.array([0.0, -0.0, -1e-9])).tolist() == [1, 1, -1]


@pytest.mark.parametrize("k", [1, 16, 31, 32, 33, 48, 64, 100, 128])
def test_round_trip(k):
  rng = np.random.default_rng(k)
  real = rng.standard_normal((7, k))
  real[0, :min(k, 3)] = 0.0
  packed = codes.pack_codes(real)
  assert packed.shape == (7, -(-k // 32))
  signs = np.where(real >= 0, 1, -1)
  np.testing.assert_array_equal(codes.unpack_codes(packed, k), signs)
  # bool and integer codes give the same words; unused high bits stay 0.
  np.testing.assert_array_equal(codes.pack_codes(real >= 0), packed)
  np.testing.assert_array_equal(codes.pack_codes(signs.astype(np.int8)), packed)
  if k % 32:
    assert np.all(packed[:, -1] >> np.uint32(k % 32) == 0)
  # Round trip from packed words too.
  np.testing.assert_array_equal(codes.pack_codes(codes.unpack_codes(packed, k)), packed)


def test_jax_in_jax_out():
  real = jnp.asarray(np.random.default_rng(0).standard_normal((3, 40)))
  packed = codes.pack_codes(real)
  assert not isinstance(packed, np.ndarray)
  np.testing.assert_array_equal(np.asarray(packed), codes.pack_codes(np.asarray(real)))
  np.testing.assert_array_equal(np.asarray(codes.unpack_codes(packed, 40)),
                                np.where(np.asarray(real) >= 0, 1, -1))


def test_as_packed_accepts_both_forms():
  real = np.random.default_rng(1).standard_normal((4, 48))
  packed, bits = codes.as_packed(real)
  assert bits == 48
  again, bits2 = codes.as_packed(packed)
  assert bits2 == 64 and again is packed
  assert codes.as_packed(packed, 48)[1] == 48


def test_errors():
  with pytest.raises(ValueError, match="words"):
    codes.unpack_codes(np.zeros((2, 2), np.uint32), 16)
  with pytest.raises(ValueError, match="uint32"):
    codes.unpack_codes(np.zeros((2, 1), np.int32), 16)
  with pytest.raises(ValueError, match="K >= 1"):
    codes.pack_codes(np.zeros((2, 0)))
  with pytest.raises(ValueError, match="needs 1"):
    codes.as_packed(np.zeros((2, 2), np.uint32), 20)
