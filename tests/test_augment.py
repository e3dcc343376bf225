"""Tests of adacorr.data.augment: per-example, key-driven, jittable augmentation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.data import augment


def random_images(b=16, h=8, w=8, c=3, seed=0):
  images = jax.random.uniform(jax.random.key(seed), (b, h, w, c))
  return images.at[0, 0, 0].set(1.0).at[0, 0, 1].set(0.0)  # the extremes appear


AUGMENTS = {
    "flip": augment.flip,
    "pad_crop_flip": augment.pad_crop_flip,
    "random_resized_crop_flip": functools.partial(augment.random_resized_crop_flip,
                                                  size=6),
}


def test_pad_crop_flip_is_a_window_of_the_padded_input():
  images = random_images(b=32)
  out = np.asarray(augment.pad_crop_flip(images, jax.random.key(1), pad=2))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  assert out.shape == images.shape and out.dtype == np.float32
  found = set()
  for i in range(len(out)):
    matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
               if np.array_equal(
                   out[i], (padded[i, dy:dy + 8, dx:dx + 8])[:, ::-1 if f else 1])]
    assert matches, f"example {i} is not a window of its padded image"
    found.add(matches[0])
  assert len(found) > 10  # offsets and flips vary across the batch


def test_pad_crop_flip_offsets_cover_the_range():
  """Offsets in [0, 2 * pad]: a one-hot image's pixel lands anywhere in the window."""
  images = jnp.zeros((400, 5, 5, 1)).at[:, 2, 2, 0].set(1.0)
  out = np.asarray(augment.pad_crop_flip(images, jax.random.key(0), pad=2))
  ys, xs = np.nonzero(out[..., 0].sum(0))
  assert set(ys) == set(range(5)) and set(xs) == set(range(5))
  assert np.all(out.reshape(400, -1).sum(1) == 1)  # pad 2 on 5 px: never cropped out


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_deterministic_per_key_and_in_range(name):
  fn = AUGMENTS[name]
  images = random_images()
  a = fn(images, jax.random.key(3))
  b = fn(images, jax.random.key(3))
  c = fn(images, jax.random.key(4))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.dtype == images.dtype
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  jitted = jax.jit(fn)(images, jax.random.key(3))
  np.testing.assert_allclose(jitted, a, atol=1e-6)


@pytest.mark.parametrize("fn", [
    augment.flip,
    functools.partial(augment.pad_crop_flip, pad=0),
    functools.partial(augment.random_resized_crop_flip, size=4, scale=(1, 1),
                      ratio=(1, 1)),
], ids=["flip", "pad_crop_flip", "random_resized_crop_flip"])
def test_flip_about_half(fn):
  """With the crop made trivial, each output is the input or its mirror, ~50/50."""
  n = 2000
  images = jax.random.uniform(jax.random.key(0), (n, 4, 4, 1))
  out = np.asarray(fn(images, jax.random.key(1)))
  x = np.asarray(images)
  same = np.all(np.isclose(out, x, atol=1e-5), axis=(1, 2, 3))
  mirrored = np.all(np.isclose(out, x[:, :, ::-1], atol=1e-5), axis=(1, 2, 3))
  assert np.all(same ^ mirrored)
  assert 0.45 < mirrored.mean() < 0.55


def test_random_resized_crop_flip_shape_range_dtype():
  images = random_images(b=8, h=20, w=12)
  out = augment.random_resized_crop_flip(images, jax.random.key(0), size=16)
  assert out.shape == (8, 16, 16, 3) and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  half = augment.random_resized_crop_flip(images.astype(jnp.bfloat16),
                                          jax.random.key(0), size=16)
  assert half.dtype == jnp.bfloat16
  constant = augment.random_resized_crop_flip(jnp.full((4, 10, 10, 2), 0.3),
                                              jax.random.key(1), size=7)
  np.testing.assert_allclose(constant, 0.3, atol=1e-6)


def test_random_resized_crop_of_a_ramp_is_a_zoom():
  """A crop + bilinear resize of a horizontal ramp is a monotone ramp, in range."""
  ramp = jnp.broadcast_to(jnp.linspace(0.0, 1.0, 32)[None, None, :, None], (64, 32, 32, 1))
  out = np.asarray(augment.random_resized_crop_flip(ramp, jax.random.key(2), size=16,
                                                    scale=(0.1, 0.5)))
  rows = out[:, :, :, 0]
  np.testing.assert_allclose(rows, rows[:, :1, :].repeat(16, 1), atol=1e-6)  # rows equal
  steps = np.diff(rows[:, 0], axis=1)
  assert np.all((steps >= -1e-6).all(1) | (steps <= 1e-6).all(1))  # monotone
  # Crop width <= sqrt(0.5 * 4/3) = 0.82 and >= sqrt(0.1 * 3/4) = 0.27 of the image.
  span = np.abs(rows[:, 0, -1] - rows[:, 0, 0])
  assert np.all((span > 0.2) & (span < 0.85)) and span.std() > 0.05


def test_crop_box_distribution():
  keys = jax.random.split(jax.random.key(0), 2000)
  box = jax.jit(jax.vmap(lambda k: augment._crop_box(k, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3))))
  top, left, h, w = (np.asarray(v) for v in box(keys))
  assert np.all((top >= 0) & (left >= 0) & (top + h <= 40) & (left + w <= 60))
  area = h * w / (40 * 60)
  assert area.min() >= 0.07 and area.max() <= 1.0 and area.min() < 0.2
  aspect = w / h  # log-uniform in [3/4, 4/3], up to rounding to whole pixels
  assert aspect.min() > 0.68 and aspect.max() < 1.47
  assert np.mean(aspect < 0.9) > 0.2 and np.mean(aspect > 1.1) > 0.2
  # Nothing fits (aspect 10 on a square image): the central, widest allowed box.
  top, left, h, w = augment._crop_box(jax.random.key(0), 40, 40, (0.9, 1.0), (10, 10))
  assert (int(top), int(left), int(h), int(w)) == (18, 0, 4, 40)


def test_center_crop():
  images = random_images(b=2, h=9, w=7)
  out = augment.center_crop(images, size=5)
  np.testing.assert_array_equal(out, images[:, 2:7, 1:6])
  with pytest.raises(ValueError, match="size"):
    augment.center_crop(images, size=8)


def test_get_augment():
  images = random_images()
  key = jax.random.key(0)
  assert augment.get_augment("none")(images, key) is images
  np.testing.assert_array_equal(augment.get_augment("flip")(images, key),
                                augment.flip(images, key))
  np.testing.assert_array_equal(augment.get_augment("pad_crop_flip", pad=2)(images, key),
                                augment.pad_crop_flip(images, key, pad=2))
  rrc = augment.get_augment("random_resized_crop_flip", size=5, scale=(0.5, 1.0))
  assert jax.jit(rrc)(images, key).shape == (16, 5, 5, 3)
  with pytest.raises(ValueError, match="name='autoaugment'"):
    augment.get_augment("autoaugment")
  with pytest.raises(ValueError, match="padding"):
    augment.get_augment("pad_crop_flip", padding=4)
  with pytest.raises(ValueError, match="size"):
    augment.get_augment("random_resized_crop_flip")
  with pytest.raises(ValueError, match="name='none'"):
    augment.get_augment("none", pad=4)


@pytest.mark.parametrize("fn", [augment.flip, augment.pad_crop_flip,
                                functools.partial(augment.random_resized_crop_flip, size=4),
                                augment.get_augment("none")])
def test_bad_images(fn):
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="images"):
    fn(jnp.zeros((8, 8, 3)), key)
  with pytest.raises(ValueError, match="images"):
    fn(jnp.zeros((2, 8, 8, 3), jnp.uint8), key)


def test_bad_arguments():
  images = random_images()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="pad"):
    augment.pad_crop_flip(images, key, pad=-1)
  with pytest.raises(ValueError, match="size"):
    augment.random_resized_crop_flip(images, key, size=0)
  with pytest.raises(ValueError, match="scale"):
    augment.random_resized_crop_flip(images, key, size=4, scale=(0.5, 0.1))
  with pytest.raises(ValueError, match="ratio"):
    augment.random_resized_crop_flip(images, key, size=4, ratio=(0.0, 1.0))
