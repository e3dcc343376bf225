"""Tests of adacorr.corruptions.weather and .digital against the references.

Reference: the installed `imagecorruptions` package (imagecorruptions-imaug, ImageNet-C
tables) and its cv2 / scipy / skimage / PIL building blocks. It returns uint8 by
TRUNCATING floats (np.uint8), so a float result of ours, times 255, is expected within
[0, 1) above the reference: tolerances below are mean |ours * 255 - ref| <= 1 and
max <= 2 (in 0..255 units) for the deterministic corruptions, 0 for JPEG (same codec,
same uint8 input). Random corruptions are checked by structure, by exact agreement of
their deterministic building blocks with cv2/scipy, and by statistics over keys.
"""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from adacorr.corruptions import filters, digital, weather

imagecorruptions = pytest.importorskip("imagecorruptions")
cv2 = pytest.importorskip("cv2")

CORRUPTIONS = {c.name: c for c in weather.CORRUPTIONS + digital.CORRUPTIONS}


def smooth_image(h, w, seed=0):
  """A smooth, natural-looking uint8 RGB image (sums of sinusoids)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx * rng.uniform(.5, 2) + yy * rng.uniform(.5, 2))
                                     + rng.uniform(0, 6)) for _ in range(3)], -1)
  return np.round(img * 255).astype(np.uint8)


@functools.cache
def _batched(name, severity, table):
  c = CORRUPTIONS[name]
  p = c.params[table][severity - 1]
  return jax.jit(jax.vmap(lambda im, k: c.fn(im, k, p)))


def apply(name, images, keys, severity, table):
  """Batch application as core.corrupt does (vmap, jit), without the clip."""
  return _batched(name, severity, table)(images, keys)


def apply_one(name, image_u8, key, severity, table):
  x = jnp.asarray(image_u8 / 255.0, jnp.float32)[None]
  out = apply(name, x, jax.random.split(key, 1), severity, table)[0]
  return np.clip(np.asarray(out, np.float64), 0, 1)


# ------------------------------------------------------------ deterministic vs reference


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturate", "pixelate",
                                  "jpeg_compression"])
@pytest.mark.parametrize("shape", [(64, 64), (50, 77)])
def test_deterministic_matches_imagecorruptions(name, shape):
  img = smooth_image(*shape)
  for severity in range(1, 6):
    ref = imagecorruptions.corrupt(img, corruption_name=name, severity=severity).astype(np.float64)
    ours = apply_one(name, img, jax.random.key(0), severity, "imagenet") * 255
    diff = np.abs(ours - ref)
    if name == "jpeg_compression":
      assert diff.max() < 1e-3, (severity, diff.max())
    else:
      assert diff.mean() <= 1.0 and diff.max() <= 2.0, (severity, diff.mean(), diff.max())


@pytest.mark.parametrize("size", [(32, 32), (29, 45)])
def test_pixelate_cifar_table_is_pil_box_down_box_up(size):
  img = smooth_image(*size, seed=3)
  h, w = size
  for severity, c in enumerate((.95, .9, .85, .75, .65), start=1):
    pil = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
    ref = np.asarray(pil.resize((w, h), Image.BOX), np.float64)
    ours = apply_one("pixelate", img, jax.random.key(0), severity, "cifar10") * 255
    assert np.abs(ours - ref).max() <= 1.0 + 1e-3  # PIL rounds after each pass


def test_pil_resize_matrices_match_pil():
  rng = np.random.default_rng(0)
  for n_in, n_out in [(50, 20), (20, 50), (32, 30), (30, 32), (77, 19), (19, 77)]:
    row = rng.integers(0, 256, (1, n_in)).astype(np.uint8)
    for resample, mode in ((Image.BOX, "box"), (Image.NEAREST, "nearest")):
      ref = np.asarray(Image.fromarray(row).resize((n_out, 1), resample), np.float64)[0]
      ours = digital._pil_resize_matrix(n_in, n_out, mode) @ row[0]
      assert np.abs(ours - ref).max() <= 0.5 + 1e-9, (n_in, n_out, mode)


def test_contrast_uses_per_channel_means():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 16, 3)), jnp.float32)
  out = digital.contrast(x, None, 0.25)
  np.testing.assert_allclose(np.asarray(out.mean((0, 1))), np.asarray(x.mean((0, 1))), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.std((0, 1))), 0.25 * np.asarray(x.std((0, 1))),
                             rtol=1e-5)


# ---------------------------------------------------------------------------------- HSV


def test_rgb_hsv_round_trip_and_skimage_agreement():
  from skimage import color
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(40, 40, 3)).astype(np.float32)
  x[0] = rng.integers(0, 4, (40, 3)) / 3.0  # ties between channels, black, white, gray
  x[1] = x[1, :, :1]
  x[2, :5] = 0.0
  x[2, 5:10] = 1.0
  hsv = np.asarray(digital.rgb_to_hsv(jnp.asarray(x)))
  np.testing.assert_allclose(hsv, color.rgb2hsv(x.astype(np.float64)), atol=2e-6)
  back = np.asarray(digital.hsv_to_rgb(jnp.asarray(hsv)))
  np.testing.assert_allclose(back, x, atol=2e-6)
  np.testing.assert_allclose(back, color.hsv2rgb(hsv.astype(np.float64)), atol=2e-6)


# -------------------------------------------------------------------------------- frost


def test_frost_textures_match_cv2_resizes():
  directory = weather.frost_dir()
  for i, f in enumerate(weather.FROST_FILES):
    raw = cv2.imread(str(directory / f))[..., ::-1]
    ref = cv2.resize(raw, (0, 0), fx=0.2, fy=0.2)  # make_cifar_c.py
    ours = weather.frost_textures(32, 32, "cifar10")[i]
    assert ours.shape == ref.shape and np.abs(ours.astype(int) - ref).max() <= 1
    ours = weather.frost_textures(224, 224, "imagenet")[i]  # imagecorruptions: x1.1, cubic
    assert ours.shape[:2] == tuple(int(np.ceil(s * 1.1)) for s in raw.shape[:2])
    ref = cv2.resize(raw, ours.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    assert np.abs(ours.astype(int) - ref).mean() < 0.01


@pytest.mark.parametrize("table,shape", [("cifar10", (32, 32)), ("imagenet", (48, 40))])
def test_frost_is_weighted_sum_with_a_crop_of_a_real_texture(table, shape):
  h, w = shape
  x = jnp.asarray(smooth_image(h, w) / 255.0, jnp.float32)
  textures = weather.frost_textures(h, w, table)
  used = set()
  for severity in (1, 5):
    p = CORRUPTIONS["frost"].params[table][severity - 1]
    keys = jax.random.split(jax.random.key(severity), 6)
    outs = np.asarray(apply("frost", jnp.broadcast_to(x, (6, h, w, 3)), keys, severity, table))
    for out in outs:
      crop = (out - p.image_weight * np.asarray(x)) / p.frost_weight * 255
      assert np.abs(crop - np.round(crop)).max() < 2e-3  # uint8 texture values
      crop = np.round(crop).astype(int)
      found = [(i, r, c) for i, t in enumerate(textures)
               for r, c in zip(*np.nonzero((t[:t.shape[0] - h + 1, :t.shape[1] - w + 1]
                                            == crop[0, 0]).all(-1)))
               if np.array_equal(t[r:r + h, c:c + w], crop)]
      assert found, "not a crop of a frost texture"
      used.add(found[0][0])
      if table == "cifar10":
        assert found[0][0] < 5  # make_cifar_c.py draws among the first five
  assert len(used) >= 2


def test_frost_missing_directory_error(tmp_path, monkeypatch):
  monkeypatch.delenv(weather.FROST_DIR_ENV, raising=False)
  package_dir = weather.frost_dir()
  monkeypatch.setenv(weather.FROST_DIR_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="pip install imagecorruptions-imaug") as err:
    weather.frost_dir()
  assert weather.FROST_DIR_ENV in str(err.value)
  with pytest.raises(FileNotFoundError):
    apply("frost", jnp.zeros((1, 32, 32, 3)), jax.random.split(jax.random.key(0), 1), 1,
          "cifar10")
  # a user directory holding the images is used
  for f in weather.FROST_FILES:
    shutil.copy(package_dir / f, tmp_path / f)
  assert weather.frost_dir() == tmp_path
  assert np.array_equal(weather.frost_textures(32, 32, "cifar10")[2],
                        weather.frost_textures(32, 32, "cifar10", package_dir)[2])


# ---------------------------------------------------------------------------------- fog


def test_plasma_fractal_statistics_match_reference():
  from imagecorruptions.corruptions import plasma_fractal as ref_plasma
  np.random.seed(0)
  for mapsize, decay in ((32, 3.0), (64, 1.75)):
    ref = np.stack([ref_plasma(mapsize, decay) for _ in range(24)])
    ours = np.asarray(jax.jit(jax.vmap(lambda k: weather.plasma_fractal(k, mapsize, decay)))(
        jax.random.split(jax.random.key(0), 24)))
    assert ours.shape == ref.shape
    assert ours.min() == 0 and np.allclose(ours.max((1, 2)), 1)
    for stat in (lambda a: a.mean(), lambda a: a.std(),
                 lambda a: np.abs(np.diff(a, axis=2)).mean()):
      assert abs(stat(ours) - stat(ref)) < 0.15 * stat(ref) + 0.01


def test_fog_adds_a_smooth_gray_field_growing_with_severity():
  img = smooth_image(32, 32)
  x = jnp.asarray(img / 255.0, jnp.float32)
  keys = jax.random.split(jax.random.key(0), 16)
  xs = jnp.broadcast_to(x, (16, 32, 32, 3))
  prev = 0.0
  for severity in (1, 3, 5):
    p = CORRUPTIONS["fog"].params["cifar10"][severity - 1]
    out = np.asarray(apply("fog", xs, keys, severity, "cifar10"))
    mx = float(x.max())
    field = out * (mx + p.strength) / mx - np.asarray(x)  # = strength * plasma
    assert np.allclose(field[..., 0], field[..., 1], atol=1e-4)  # same for every channel
    assert field.min() > -1e-4 and np.allclose(field.max((1, 2, 3)), p.strength, atol=1e-4)
    rough = np.abs(np.diff(field, axis=2)).mean() / field.std()
    assert rough < 0.8  # white noise would give ~1.1
    change = np.abs(out - np.asarray(x)).mean()
    if severity > 1:
      assert change > prev * 0.9  # more fog with severity (up to sampling noise)
    prev = change


# --------------------------------------------------------------------------------- snow


def test_snow_components_and_brightening():
  img = smooth_image(32, 32)
  x = jnp.asarray(img / 255.0, jnp.float32)
  keys = jax.random.split(jax.random.key(0), 4)
  for severity in (1, 5):
    p = CORRUPTIONS["snow"].params["cifar10"][severity - 1]
    out = np.asarray(apply("snow", jnp.broadcast_to(x, (4, 32, 32, 3)), keys, severity,
                           "cifar10"))
    xn = np.asarray(x)
    gray = xn @ np.array([0.299, 0.587, 0.114])
    blended = p.blend * xn + (1 - p.blend) * np.maximum(xn, gray[..., None] * 1.5 + 0.5)
    flakes = out - blended  # layer + layer rotated by 180 degrees
    assert np.allclose(flakes, flakes[:, ::-1, ::-1], atol=1e-5)
    assert np.allclose(flakes[..., 0], flakes[..., 2], atol=1e-5)
    assert flakes.min() > -1e-5 and flakes.max() > 0.05
    assert np.clip(out, 0, 1).mean() > xn.mean() + 0.02


def test_clipped_zoom_matches_scipy_zoom():
  from scipy.ndimage import zoom
  a = np.random.default_rng(0).normal(size=(40, 50))
  for z in (1.0, 1.75, 2.25, 4.5):
    ch = [int(np.ceil(n / z)) for n in a.shape]
    tops = [(n - c) // 2 for n, c in zip(a.shape, ch)]
    zz = zoom(a[tops[0]:tops[0] + ch[0], tops[1]:tops[1] + ch[1]], (z, z), order=1)
    trims = [(zz.shape[i] - a.shape[i]) // 2 for i in range(2)]
    for centre, ref in ((False, zz[:40, :50]),
                        (True, zz[trims[0]:trims[0] + 40, trims[1]:trims[1] + 50])):
      ours = np.asarray(filters.clipped_zoom(jnp.asarray(a, jnp.float32), z,
                                             centre_trim=centre))
      assert np.abs(ours - ref).max() < 1e-5, (z, centre)


@pytest.mark.parametrize("name,severity", [("snow", 2), ("snow", 5), ("fog", 3),
                                           ("spatter", 3), ("spatter", 5),
                                           ("elastic_transform", 4)])
def test_random_corruption_statistics_match_reference(name, severity):
  """Mean and mean |change| over images/keys agree with imagecorruptions."""
  img = smooth_image(64, 64, seed=1)
  n = 12
  np.random.seed(0)
  ref = np.stack([imagecorruptions.corrupt(img, corruption_name=name, severity=severity)
                  for _ in range(n)]) / 255.0
  x = jnp.broadcast_to(jnp.asarray(img / 255.0, jnp.float32), (n, 64, 64, 3))
  ours = np.clip(np.asarray(apply(name, x, jax.random.split(jax.random.key(1), n), severity,
                                  "imagenet")), 0, 1)
  xn = img / 255.0
  ref_change, our_change = np.abs(ref - xn).mean(), np.abs(ours - xn).mean()
  assert abs(our_change - ref_change) < 0.2 * ref_change + 0.005, (our_change, ref_change)
  assert abs(ours.mean() - ref.mean()) < 0.04


# ------------------------------------------------------------------------------ spatter


def _liquid(shape, loc, scale, sigma, threshold, seed):
  from skimage.filters import gaussian
  layer = gaussian(np.random.default_rng(seed).normal(loc, scale, size=shape), sigma=sigma)
  layer[layer < threshold] = 0
  return layer


@pytest.mark.parametrize("shape,params", [((32, 32), (0.62, 0.1, 0.7, 0.7)),
                                          ((64, 48), (0.65, 0.3, 2, 0.68)),
                                          ((96, 96), (0.65, 0.3, 4, 0.69))])
def test_spatter_water_steps_match_cv2(shape, params):
  liquid = _liquid(shape, *params, seed=sum(shape))
  u8 = (liquid * 255).astype(np.uint8)
  ref_edges = cv2.Canny(u8, 50, 150) > 0
  edges = np.asarray(jax.jit(weather.canny, static_argnums=(1, 2))(
      jnp.asarray(u8, jnp.float32), 50.0, 150.0))
  assert ref_edges.sum() > 10 and (edges != ref_edges).sum() <= 0.01 * ref_edges.sum()
  dist = cv2.distanceTransform(255 - cv2.Canny(u8, 50, 150), cv2.DIST_L2, 5)
  _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
  ours = np.asarray(jax.jit(weather.chamfer_distance, static_argnums=1)(
      jnp.asarray(ref_edges), 20.0))
  assert np.abs(ours - dist).max() < 1e-4
  dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
  dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
  m = u8 * cv2.blur(dist, (3, 3)).astype(np.float32)
  m /= m.max()
  ours = np.asarray(jax.jit(weather.water_layer)(jnp.asarray(liquid, jnp.float32)))
  assert np.abs(ours - m).mean() < 2e-3


def test_spatter_mud_is_a_blend_towards_mud_colour():
  x = jnp.asarray(smooth_image(48, 48) / 255.0, jnp.float32)
  color = np.array([63, 42, 20]) / 255.0
  outs = np.asarray(apply("spatter", jnp.broadcast_to(x, (4, 48, 48, 3)),
                          jax.random.split(jax.random.key(0), 4), 5, "cifar10"))
  xn = np.asarray(x)
  # out = x (1 - m) + m color, m = 0 or >= 0.8, the same m for every channel
  gap = xn - color
  channel = np.argmax(np.abs(gap), axis=-1)[..., None]  # the best-conditioned channel
  m = np.take_along_axis(xn - outs, channel[None], -1) / np.take_along_axis(gap, channel, -1)
  np.testing.assert_allclose(outs, xn * (1 - m) + m * color, atol=1e-5)
  m = m[..., 0]
  assert ((np.abs(m) < 1e-4) | ((m > 0.8 - 1e-4) & (m < 1 + 1e-4))).all()
  assert (m > 0.5).any()


# ------------------------------------------------------------------------------ elastic


def test_elastic_zero_displacement_is_identity():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(37, 41, 3)), jnp.float32)
  for p in (digital.ElasticParams(0.0, 0.0, 0.0, "cifar10"),
            digital.ElasticParams(0.0, 0.0, 0.0, "imagenet")):
    out = jax.jit(lambda im, k: digital.elastic_transform(im, k, p))(x, jax.random.key(3))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-5)


def test_elastic_warp_and_sampling_match_cv2_and_scipy():
  from scipy import ndimage
  rng = np.random.default_rng(0)
  img = rng.uniform(size=(40, 52, 3)).astype(np.float32)
  pts1 = np.float32([[30, 30], [30, 10], [10, 10]])
  pts2 = (pts1 + rng.uniform(-3, 3, (3, 2))).astype(np.float32)
  m = digital.affine_from_points(jnp.asarray(pts1), jnp.asarray(pts2))
  np.testing.assert_allclose(np.asarray(m), cv2.getAffineTransform(pts1, pts2), atol=1e-4)
  ref = cv2.warpAffine(img, cv2.getAffineTransform(pts1, pts2), (52, 40),
                       borderMode=cv2.BORDER_REFLECT_101)
  assert np.abs(np.asarray(digital.warp_affine(jnp.asarray(img), m)) - ref).max() < 0.02
  y, x = np.meshgrid(np.arange(40), np.arange(52), indexing="ij")
  dy, dx = rng.normal(size=(2, 40, 52)) * 3
  ref = np.stack([ndimage.map_coordinates(img[..., c], [y + dy, x + dx], order=1, mode="reflect")
                  for c in range(3)], -1)
  ours = digital.sample_bilinear(jnp.asarray(img), jnp.asarray(y + dy, jnp.float32),
                                 jnp.asarray(x + dx, jnp.float32), "reflect")
  assert np.abs(np.asarray(ours) - ref).max() < 1e-4


# --------------------------------------------------------------------- keys and jit


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_keys_determinism_and_jit(name):
  c = CORRUPTIONS[name]
  x = jnp.broadcast_to(jnp.asarray(smooth_image(32, 32) / 255.0, jnp.float32), (3, 32, 32, 3))
  k = jax.random.split(jax.random.key(7), 3)
  a = np.asarray(apply(name, x, k, 3, "cifar10"))
  b = np.asarray(apply(name, x, k, 3, "cifar10"))
  np.testing.assert_array_equal(a, b)  # same key, same result
  assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
  if c.random:  # the three images are equal, their keys are not
    assert not np.allclose(a[0], a[1]) and not np.allclose(a[1], a[2])
  else:
    np.testing.assert_allclose(a[0], a[1], atol=1e-6)
