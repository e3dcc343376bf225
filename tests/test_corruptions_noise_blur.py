"""Noise and blur corruptions against their references.

'imagenet' tables: the installed `imagecorruptions` package (ImageNet-C for any size).
'cifar10' tables: `make_cifar_c.py` of `hendrycks/robustness`, whose operations the
numpy helpers below transcribe (it imports Wand/torch, so it is not run itself).
"""

from __future__ import annotations

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
imagecorruptions = pytest.importorskip("imagecorruptions")

from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position
from scipy.ndimage import zoom as scizoom  # pylint: disable=g-import-not-at-top
from skimage.filters import gaussian as sk_gaussian  # pylint: disable=g-import-not-at-top
from imagecorruptions import corruptions as icc  # pylint: disable=g-import-not-at-top

from adacorr.corruptions import blur, noise  # pylint: disable=g-import-not-at-top

REG = {c.name: c for c in noise.CORRUPTIONS + blur.CORRUPTIONS}
NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
         "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur")


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
  """A natural-ish uint8 RGB image: smooth colour waves plus a bright rectangle (edges)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
  img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (a * xx + b * yy) + c)
                  for a, b, c in rng.uniform(0, 3, (3, 3))], -1)
  box = (slice(height // 4, height // 2), slice(width // 3, 2 * width // 3))
  img[box] = img[box] * 0.3 + 0.6
  return np.uint8(np.round(img * 255))


def to_float(u: np.ndarray) -> jax.Array:
  return jnp.asarray(u / 255.0, jnp.float32)


_FNS = {}


def apply(name: str, table: str, severity: int, images: jax.Array, keys: jax.Array,
          clip: bool = True) -> np.ndarray:
  """As `core.corrupt` does: jit(vmap(fn)) over (B, H, W, 3) with per-image keys, then
  (optionally) the clip. Compiled functions are shared between tests (compiling is
  most of these tests' time), so tests use few shapes: NOISE_SHAPE for the noises."""
  c = REG[name]
  sig = (name, table, severity)
  if sig not in _FNS:
    p = c.params[table][severity - 1]
    _FNS[sig] = jax.jit(jax.vmap(lambda im, kk: c.fn(im, kk, p)))
  y = np.asarray(_FNS[sig](images, keys))
  return np.clip(y, 0.0, 1.0) if clip else y


NOISE_SHAPE = (4, 64, 64, 3)


def const_image(values) -> jax.Array:
  """NOISE_SHAPE, channel i constant at values[i]."""
  return jnp.broadcast_to(jnp.asarray(values, jnp.float32), NOISE_SHAPE)


def keys(n: int, seed: int = 0) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


# ------------------------------------------------------------------------------ tables


def _reference_table(name: str):
  """The `c = [...][severity - 1]` list of the installed imagecorruptions function."""
  tree = ast.parse(inspect.getsource(getattr(icc, name)))
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "c":
      return eval(compile(ast.Expression(node.value.value), "<c>", "eval"), {"np": np})  # pylint: disable=eval-used
  raise AssertionError(name)


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_tables_are_the_imagecorruptions_tables(name):
  ref = _reference_table(name)
  ours = REG[name].params["imagenet"]
  assert len(ref) == len(ours) == 5
  for r, o in zip(ref, ours):
    if name == "zoom_blur":
      np.testing.assert_array_equal(np.asarray(o), r)
    else:
      assert tuple(np.atleast_1d(r).tolist()) == tuple(np.atleast_1d(o).tolist())


# The make_cifar_c.py numbers (as quoted in /work/shared/reference/methods.md).
CIFAR10 = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
}


@pytest.mark.parametrize("name", sorted(CIFAR10))
def test_cifar10_tables_are_make_cifar_c(name):
  assert tuple(REG[name].params["cifar10"]) == CIFAR10[name]


def test_cifar10_zoom_factors_are_make_cifar_c():
  for severity, stop in enumerate((1.06, 1.11, 1.16, 1.21, 1.26)):
    zooms = REG["zoom_blur"].params["cifar10"][severity]
    np.testing.assert_array_equal(zooms, np.arange(1, stop, 0.01))
  # np.arange's float end point: the stop 1.06 and 1.11 are themselves included.
  assert [len(p) for p in REG["zoom_blur"].params["cifar10"]] == [7, 12, 16, 21, 26]


# ----------------------------------------------- deterministic blurs vs the references


@pytest.mark.parametrize("name,shape", [
    ("defocus_blur", (56, 40)), ("gaussian_blur", (56, 40)),
    ("zoom_blur", (48, 64)), ("zoom_blur", (224, 224))])
def test_deterministic_blurs_match_imagecorruptions(name, shape):
  u = smooth_image(*shape)
  x = to_float(u)[None]
  for severity in range(1, 6):
    p = REG[name].params["imagenet"][severity - 1]
    ours = np.clip(np.asarray(REG[name].fn(x[0], None, p)), 0, 1) * 255  # eager: no compile
    # The reference function's float output (before `corrupt`'s uint8 cast).
    ref = np.asarray(imagecorruptions.corruption_dict[name](Image.fromarray(u), severity),
                     np.float64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3, err_msg=f"{name} {severity}")
    # `corrupt` truncates to uint8: ours lies in [ref, ref + 1] levels.
    ref8 = imagecorruptions.corrupt(u, corruption_name=name, severity=severity)
    assert np.all(ours >= ref8 - 1e-3) and np.all(ours <= ref8.astype(float) + 1 + 1e-3)


@pytest.mark.parametrize("table", ["cifar10", "imagenet"])
def test_motion_blur_matches_reference_at_the_drawn_angle(table):
  u = smooth_image(40, 56)
  x = to_float(u)
  ks = keys(3, seed=7)
  ours = apply("motion_blur", table, 5, jnp.broadcast_to(x, (3,) + x.shape), ks) * 255
  radius, sigma = REG["motion_blur"].params[table][4]
  angles = []
  for i in range(3):
    angle = float(jax.random.uniform(ks[i], (), jnp.float32, -45.0, 45.0))
    angles.append(angle)
    ref = np.clip(icc._motion_blur(u, radius, sigma, angle), 0, 255)  # pylint: disable=protected-access
    np.testing.assert_allclose(ours[i], ref, rtol=0, atol=2e-3)
  assert len(set(angles)) == 3 and all(-45 <= a <= 45 for a in angles)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_motion_blur_imagenet_matches_reference_at_fixed_angles(severity):
  u = smooth_image(64, 64, seed=3)
  radius, sigma = REG["motion_blur"].params["imagenet"][severity - 1]
  for angle in (-44.0, -10.5, 0.0, 30.0):
    ours = np.asarray(blur.filters.motion_blur(to_float(u), radius, sigma, angle)) * 255
    ref = icc._motion_blur(u, radius, sigma, angle)  # pylint: disable=protected-access
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3)


def _cifar_clipped_zoom(img, zoom_factor):  # make_cifar_c.py
  h = img.shape[0]
  ch = int(np.ceil(h / zoom_factor))
  top = (h - ch) // 2
  img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
  trim_top = (img.shape[0] - h) // 2
  return img[trim_top:trim_top + h, trim_top:trim_top + h]


def _cifar_reference(name, u, severity):  # make_cifar_c.py, float output in [0, 255]
  c = CIFAR10.get(name)
  c = c[severity - 1] if c else None
  if name == "defocus_blur":
    x = np.array(u) / 255.
    kernel = icc.disk(radius=c[0], alias_blur=c[1])  # same `disk` in both references
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], -1)
  elif name == "gaussian_blur":
    out = sk_gaussian(np.array(u) / 255., sigma=c, channel_axis=-1)
  elif name == "zoom_blur":
    zooms = np.arange(1, (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1], 0.01)
    x = (np.array(u) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for z in zooms:
      out += _cifar_clipped_zoom(x, z)
    out = (x + out) / (len(zooms) + 1)
  return np.clip(out, 0, 1) * 255


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "zoom_blur"])
def test_cifar10_deterministic_blurs_match_make_cifar_c(name):
  u = smooth_image(32, 32, seed=1)
  for severity in range(1, 6):
    p = REG[name].params["cifar10"][severity - 1]
    ours = np.clip(np.asarray(REG[name].fn(to_float(u), None, p)), 0, 1) * 255
    ref = _cifar_reference(name, u, severity)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3, err_msg=f"{name} {severity}")
  # And the blur does something: not the identity at severity 5.
  assert np.abs(ours - u).mean() > 1.0


# ------------------------------------------------------------- noise: statistics


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise",
                                  "speckle_noise"])
def test_noise_statistics_match_imagecorruptions(name, severity):
  """Residual mean/std and saturated fractions of ours (uint8-truncated like `corrupt`)
  against the reference's, over the same image, within sampling tolerance."""
  u = smooth_image(*NOISE_SHAPE[1:3], seed=4)
  n_draws = NOISE_SHAPE[0]
  np.random.seed(0)
  ref = np.stack([imagecorruptions.corrupt(u, corruption_name=name, severity=severity)
                  for _ in range(n_draws)]).astype(np.float64)
  x = jnp.broadcast_to(to_float(u), (n_draws,) + u.shape)
  ours = np.floor(apply(name, "imagenet", severity, x, keys(n_draws)) * 255 + 1e-4)
  r_ref, r_ours = ref - u, ours - u
  n = r_ref.size
  sd = r_ref.std()
  assert abs(r_ours.mean() - r_ref.mean()) < 5 * sd / np.sqrt(n) + 0.05, (
      r_ours.mean(), r_ref.mean())
  # Variances agree within sampling error (estimated from the squared residuals).
  se = np.sqrt(((r_ref ** 2).var() + (r_ours ** 2).var()) / n)
  assert abs(r_ours.var() - r_ref.var()) < 5 * se, (r_ours.var(), r_ref.var(), se)
  for level in (0, 255):
    f_ref, f_ours = np.mean(ref == level), np.mean(ours == level)
    assert abs(f_ours - f_ref) < 5 * np.sqrt(max(f_ref, 1e-3) / n) + 1e-3, (level, f_ours,
                                                                            f_ref)


def test_gaussian_noise_residual_std_is_sigma():
  x = const_image([0.5, 0.5, 0.5])
  for table, severity in (("imagenet", 1), ("imagenet", 5), ("cifar10", 5)):
    sigma = REG["gaussian_noise"].params[table][severity - 1]
    r = apply("gaussian_noise", table, severity, x, keys(4), clip=False) - 0.5
    assert abs(r.mean()) < 5 * sigma / np.sqrt(r.size)
    assert abs(r.std() / sigma - 1) < 0.02


def test_shot_noise_is_poisson():
  """Mean x, variance x / c; values on the lattice k / c."""
  levels = (0.1, 0.5, 0.9)
  x = const_image(levels)
  for table, severity in (("imagenet", 1), ("imagenet", 5), ("cifar10", 5)):
    c = REG["shot_noise"].params[table][severity - 1]
    y = apply("shot_noise", table, severity, x, keys(4), clip=False)
    np.testing.assert_allclose(y * c, np.round(y * c), atol=1e-3)
    for ch, v in enumerate(levels):
      s = y[..., ch]
      assert abs(s.mean() - v) < 5 * np.sqrt(v / c / s.size)
      assert abs(s.var() / (v / c) - 1) < 0.1, (table, severity, v, s.var(), v / c)


def test_impulse_noise_fraction_is_amount():
  x = to_float(smooth_image(*NOISE_SHAPE[1:3], seed=5))  # values strictly inside (0, 1)
  assert 0 < float(x.min()) and float(x.max()) < 1
  xb = jnp.broadcast_to(x, NOISE_SHAPE)
  for table, severity in (("imagenet", 1), ("imagenet", 5), ("cifar10", 5)):
    amount = REG["impulse_noise"].params[table][severity - 1]
    y = apply("impulse_noise", table, severity, xb, keys(4, seed=severity))
    changed = y != np.asarray(xb)
    salt, pepper = np.mean(y == 1.0), np.mean(y == 0.0)
    tol = 5 * np.sqrt(amount / y.size)
    assert abs(changed.mean() - amount) < tol
    assert abs(salt - amount / 2) < tol and abs(pepper - amount / 2) < tol
    assert np.all((y == np.asarray(xb)) | (y == 0) | (y == 1))
    # Per value, not per pixel: channels flip independently.
    assert np.mean(changed.all(-1)) < 2 * amount ** 3 + tol


def test_speckle_noise_residual_std_is_x_times_c():
  levels = (0.2, 0.5, 0.8)
  x = const_image(levels)
  for table, severity in (("imagenet", 5), ("cifar10", 5)):
    c = REG["speckle_noise"].params[table][severity - 1]
    r = apply("speckle_noise", table, severity, x, keys(4), clip=False) - np.asarray(x)
    for ch, v in enumerate(levels):
      assert abs(r[..., ch].std() / (v * c) - 1) < 0.03
      assert abs(r[..., ch].mean()) < 5 * v * c / np.sqrt(r[..., ch].size)


# ------------------------------------------------------------------- glass blur


def _reference_shuffle(x, delta, offsets):
  """The reference loop (both references; make_cifar_c.py has H = W = 32), numpy,
  with the given offsets instead of np.random.randint's."""
  x = x.copy()
  height, width = x.shape[:2]
  for i in range(offsets.shape[0]):
    for a, h in enumerate(range(height - delta, delta, -1)):
      for b, w in enumerate(range(width - delta, delta, -1)):
        dx, dy = offsets[i, a, b]
        h_prime, w_prime = h + dy, w + dx
        # swap (as written; on numpy arrays this copies x[h', w'] into x[h, w])
        x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
  return x


def test_shuffle_pixels_matches_reference_loop():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (20, 27, 3)).astype(np.uint8)
  for delta, iters in ((1, 2), (3, 1)):
    off = blur.glass_offsets(jax.random.key(delta), 20, 27, delta, iters)
    assert off.shape == (iters, 20 - 2 * delta, 27 - 2 * delta, 2)
    off_np = np.asarray(off)
    assert off_np.min() == -delta and off_np.max() == delta - 1  # randint(-d, d)
    ours = np.asarray(blur.shuffle_pixels(jnp.asarray(img, jnp.float32), off, delta))
    np.testing.assert_array_equal(ours, _reference_shuffle(img, delta, off_np))
    # Every output pixel is some input pixel; pixels out of the loop's reach are kept.
    inputs = {tuple(p) for p in img.reshape(-1, 3)}
    assert all(tuple(p) in inputs for p in ours.astype(np.uint8).reshape(-1, 3))
    np.testing.assert_array_equal(ours[0], img[0])  # row 0 is never written
    np.testing.assert_array_equal(ours[:, 0], img[:, 0])
    assert np.any(ours != img)


def test_shuffle_pixels_true_swap_is_a_permutation():
  rng = np.random.default_rng(1)
  img = rng.permutation(30 * 30).reshape(30, 30, 1).repeat(3, -1).astype(np.float32)
  off = blur.glass_offsets(jax.random.key(3), 30, 30, 2, 2)
  ours = np.asarray(blur.shuffle_pixels(jnp.asarray(img), off, 2, swap=True))
  np.testing.assert_array_equal(np.sort(ours.ravel()), np.sort(img.ravel()))
  assert np.mean(ours != img) > 0.3
  copied = np.asarray(blur.shuffle_pixels(jnp.asarray(img), off, 2))
  assert len(np.unique(copied)) < len(np.unique(img))  # the reference's duplication


@pytest.mark.parametrize("table,shape", [("cifar10", (32, 32)), ("imagenet", (64, 48))])
def test_glass_blur_with_offsets_matches_reference(table, shape):
  u = smooth_image(*shape, seed=6)
  for severity in (2, 5):
    sigma, delta, iters = REG["glass_blur"].params[table][severity - 1]
    off = blur.glass_offsets(jax.random.key(severity), *shape, delta, iters)
    ours = np.asarray(jax.jit(lambda x, o, s=sigma, d=delta: blur.glass_blur_with_offsets(
        x, o, s, d))(to_float(u), off)) * 255
    x = np.uint8(sk_gaussian(u / 255., sigma=sigma, channel_axis=-1) * 255)
    x = _reference_shuffle(x, delta, np.asarray(off))
    ref = np.clip(sk_gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255
    # Equal up to float32-vs-float64 truncation to uint8 of values within rounding of
    # a level (at most one level, on few values).
    diff = np.abs(ours - ref)
    assert diff.max() < 1.0 + 1e-3, (severity, diff.max())
    assert np.mean(diff > 1e-3) < 0.03, (severity, np.mean(diff > 1e-3))


def test_glass_blur_vmapped_equals_per_image():
  # The shapes and keys of test_determinism_key_dependence_and_jit (shared compilation).
  x = to_float(np.stack([smooth_image(28, 36, seed=s) for s in range(2)]))
  ks = keys(2, seed=0)
  batched = apply("glass_blur", "imagenet", 5, x, ks, clip=False)
  sigma, delta, iters = REG["glass_blur"].params["imagenet"][4]
  single = jax.jit(lambda im, k: blur.glass_blur_with_offsets(
      im, blur.glass_offsets(k, 28, 36, delta, iters), sigma, delta))
  for i in range(2):
    np.testing.assert_allclose(batched[i], np.asarray(single(x[i], ks[i])), rtol=0, atol=1e-6)


# ------------------------------------------------------ keys, determinism, jit


@pytest.mark.parametrize("name", NAMES)
def test_determinism_key_dependence_and_jit(name):
  """Under jax.jit (traced images and keys): same keys, same result; other keys, another
  result iff the corruption is random. Both tables, severity 5."""
  c = REG[name]
  if name.endswith("noise"):  # share the compilations of the noise tests
    x = to_float(np.stack([smooth_image(*NOISE_SHAPE[1:3], seed=s) for s in range(4)]))
  else:
    x = to_float(np.stack([smooth_image(28, 36, seed=s) for s in range(2)]))
  n = x.shape[0]
  for table in ("cifar10", "imagenet"):
    a = apply(name, table, 5, x, keys(n, seed=0))
    b = apply(name, table, 5, x, keys(n, seed=0))
    d = apply(name, table, 5, x, keys(n, seed=1))
    assert a.shape == x.shape and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    if c.random:
      assert np.abs(a - d).max() > 1e-3, table
      assert np.abs(a[0] - a[1]).max() > 1e-3  # per-image keys
    else:
      np.testing.assert_array_equal(a, d)
    assert np.abs(a - np.asarray(x)).mean() > 1e-3, table  # it does something
