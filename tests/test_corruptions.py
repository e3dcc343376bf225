"""Properties every corruption must have (the per-family files compare with the reference).

Natural images: real Fashion-MNIST test images when the Debian package is installed,
else a smooth synthetic image (the SSIM ordering needs images with structure).
"""

import functools
import os

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import corruptions
from adacorr.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# In the CIFAR-10-C table these two do not get steadily harsher: elastic_transform's affine
# warp is strongest at severity 1, and spatter switches from water to mud at severity 4.
# The reference make_cifar_c.py on the same Fashion-MNIST images gives mean SSIM
# elastic 0.453, 0.534, 0.518, 0.574, 0.685 and spatter 0.954, 0.906, 0.841, 0.915, 0.883.
NOT_MONOTONE_IN_REFERENCE = ("elastic_transform", "spatter")


def _smooth_rgb(n, size, seed=0):
  """Smooth random images: low-frequency noise upsampled, in [0.05, 0.95]."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(0, 1, (n, 6, 6, 3)).astype(np.float32)
  up = jax.image.resize(low, (n, size, size, 3), "cubic")
  return np.asarray(0.05 + 0.9 * jnp.clip(up, 0, 1))


@functools.cache
def _natural_gray(n=8):
  path = os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")
  if os.path.exists(path):
    from adacorr.data import read_idx
    images = read_idx(path)[:n].astype(np.float32) / 255.0
    return images[..., None]
  return _smooth_rgb(n, 28).mean(-1, keepdims=True)


@functools.cache
def _all_severities(name):
  """The natural gray batch corrupted at severities 1..5 (computed once per name)."""
  x = jnp.asarray(_natural_gray())
  key = jax.random.PRNGKey(0)
  return [np.asarray(corruptions.corrupt(x, name, s, key)) for s in corruptions.SEVERITIES]


def test_names():
  assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
  assert len(set(ALL_CORRUPTIONS)) == 19
  assert set(corruptions.registry()) == set(ALL_CORRUPTIONS)
  for c in corruptions.registry().values():
    assert set(c.params) == {"cifar10", "imagenet"}
    assert all(len(table) == 5 for table in c.params.values())


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_gray_images_keep_shape_dtype_range_at_every_severity(name):
  x = _natural_gray()
  for y in _all_severities(name):
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
  # Every severity changes the image, except saturate's severities 1-3 (which scale the
  # saturation, and a gray image has none; the reference behaves the same).
  changed = [np.abs(y - x).mean() > 1e-4 for y in _all_severities(name)]
  assert changed[3:] == [True, True] if name == "saturate" else all(changed)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_mean_ssim_falls_from_severity_1_to_5(name):
  x = jnp.asarray(_natural_gray())
  ssim = [float(pix.ssim(x, jnp.asarray(y)).mean()) for y in _all_severities(name)]
  if name in NOT_MONOTONE_IN_REFERENCE:
    assert max(ssim) < 0.99, ssim  # every severity still corrupts visibly
    return
  assert ssim[4] < ssim[0], ssim
  # And broadly in between: no severity is clearly milder than the one before it.
  assert all(b < a + 0.05 for a, b in zip(ssim, ssim[1:])), ssim


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
@pytest.mark.parametrize("table,size", [("cifar10", 32), ("imagenet", 64)])
def test_rgb_images_both_tables(name, table, size):
  x = jnp.asarray(_smooth_rgb(2, size), jnp.bfloat16 if table == "cifar10" else jnp.float32)
  y = corruptions.corrupt(x, name, 3, jax.random.PRNGKey(1), params=table)
  assert y.shape == x.shape and y.dtype == x.dtype
  y = np.asarray(y, np.float32)
  assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
  assert np.abs(y - np.asarray(x, np.float32)).mean() > 1e-4


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_deterministic_per_key_and_random_ones_vary_with_the_key(name):
  x = jnp.asarray(_natural_gray())  # the batch shape compiled above
  a = corruptions.corrupt(x, name, 3, jax.random.PRNGKey(7))
  b = corruptions.corrupt(x, name, 3, jax.random.PRNGKey(7))
  np.testing.assert_array_equal(a, b)
  c = corruptions.corrupt(x, name, 3, jax.random.PRNGKey(8))
  if corruptions.registry()[name].random:
    assert not np.array_equal(a, c)
  else:
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_an_image_does_not_depend_on_its_batch_neighbours(name):
  x = jnp.asarray(_smooth_rgb(4, 32))
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  batch = corruptions.corrupt(x, name, 4, keys)
  alone = corruptions.corrupt(x[2:3], name, 4, keys[2:3])
  np.testing.assert_allclose(batch[2:3], alone, atol=1e-5)


def test_works_inside_jit():
  x = jnp.asarray(_smooth_rgb(2, 32))
  f = jax.jit(lambda images, key: corruptions.corrupt(images, "fog", 2, key))
  y = f(x, jax.random.PRNGKey(0))
  np.testing.assert_allclose(y, corruptions.corrupt(x, "fog", 2, jax.random.PRNGKey(0)),
                             atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="gaussian"), "name"),
    (dict(severity=0), "severity"),
    (dict(severity=6), "severity"),
    (dict(severity=True), "severity"),
    (dict(severity=2.5), "severity"),
    (dict(params="svhn"), "params"),
])
def test_bad_arguments_raise_named_errors(kwargs, match):
  args = dict(images=jnp.zeros((1, 8, 8, 3)), name="contrast", severity=1,
              key=jax.random.PRNGKey(0))
  args.update(kwargs)
  params = args.pop("params", "cifar10")
  with pytest.raises(ValueError, match=match):
    corruptions.corrupt(args["images"], args["name"], args["severity"], args["key"],
                        params=params)


@pytest.mark.parametrize("images,match", [
    (np.zeros((8, 8, 3), np.float32), "images"),          # rank 3
    (np.zeros((1, 8, 8, 2), np.float32), "images"),       # 2 channels
    (np.full((1, 8, 8, 3), 1.5, np.float32), r"\[0, 1\]"),  # out of range
    (np.full((1, 8, 8, 3), -0.1, np.float32), r"\[0, 1\]"),
    (np.zeros((1, 8, 8, 3), np.uint8), "floating"),       # uint8 is not in [0, 1] floats
])
def test_bad_images_raise_named_errors(images, match):
  with pytest.raises(ValueError, match=match):
    corruptions.corrupt(images, "contrast", 1, jax.random.PRNGKey(0))


def test_wrong_number_of_keys_raises():
  with pytest.raises(ValueError, match="key"):
    corruptions.corrupt(jnp.zeros((3, 8, 8, 3)), "contrast", 1,
                        jax.random.split(jax.random.PRNGKey(0), 2))
