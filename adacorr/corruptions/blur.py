"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, (extra) gaussian_blur.

Per-image functions `fn(image, key, p)` on (H, W, 3) float32 in [0, 1] (see `core`).
'cifar10' tables and semantics: `ImageNet-C/create_c/make_cifar_c.py` of
`hendrycks/robustness` (CIFAR-10-C); 'imagenet' tables: `imagecorruptions/corruptions.py`
(ImageNet-C generalised to any image size). All parameters here are in pixel *distances*
(radii, sigmas, offsets, zoom factors), none in pixel *values*, so working in [0, 1]
instead of [0, 255] changes no parameter. Kernels and interpolation tables are built
with numpy from the static parameters and the static image size; the image data is
processed with jax only, so everything is jittable.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.corruptions import filters
from adacorr.corruptions.base import Corruption

# ----------------------------------------------------------------------------- defocus


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """The reference `disk()`: a normalised binary disk, anti-aliased by a small Gaussian.

  The disk lives on a 17 x 17 grid for `radius <= 8` (else `2 radius + 1`), and is
  smoothed as `cv2.GaussianBlur(disk, (k, k), alias_blur)` with k = 3 (5 if radius > 8)
  and cv2's default border (reflect-101), here in numpy.
  """
  if radius <= 8:
    grid, ksize = np.arange(-8, 9), 3
  else:
    grid, ksize = np.arange(-radius, radius + 1), 5
  xx, yy = np.meshgrid(grid, grid)
  disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
  disk /= disk.sum()
  g = filters.cv2_gaussian_kernel_1d(ksize, alias_blur).astype(np.float64)
  r = ksize // 2
  padded = np.pad(disk, r, mode="reflect")  # cv2 BORDER_REFLECT_101
  n = disk.shape[0]
  rows = sum(g[i] * padded[i:i + n, :] for i in range(ksize))
  out = sum(g[i] * rows[:, i:i + n] for i in range(ksize))
  return out.astype(np.float32)


def defocus_blur(image: jax.Array, key: jax.Array, p: tuple[float, float]) -> jax.Array:
  """Correlation with the anti-aliased disk kernel `disk_kernel(radius, alias_blur)`.

  As the reference's `cv2.filter2D(x, -1, kernel)` per channel: centred anchor, border
  reflect-101. `p = (radius, alias_blur)`.
  """
  del key
  radius, alias_blur = p
  return filters.depthwise_conv(image, disk_kernel(radius, alias_blur), mode="reflect")


# ----------------------------------------------------------------------------- glass


def shuffle_pixels(image: jax.Array, offsets: jax.Array, delta: int, *,
                   swap: bool = False) -> jax.Array:
  """The reference's sequential local pixel "shuffle" of glass blur.

  For each iteration, for h = H - delta down to delta + 1, for w = W - delta down to
  delta + 1 (the reference's `range(d - delta, delta, -1)`; make_cifar_c.py has d = 32
  hard-coded), with (dx, dy) = `offsets[it, h-index, w-index]` in [-delta, delta):
  the reference statement `x[h, w], x[h', w'] = x[h', w'], x[h, w]` with
  (h', w') = (h + dy, w + dx). On numpy (and numba) arrays that statement is not a swap:
  `x[h', w']` is a view, so both pixels end up holding the old `x[h', w']` -- pixel
  (h, w) is overwritten by its neighbour's value. We reproduce that (`swap=False`);
  `swap=True` does a true swap (a permutation; not what the benchmark data used).

  Args:
    image: (H, W, C).
    offsets: (iterations, max(H - 2 delta, 0), max(W - 2 delta, 0), 2) int32 (dx, dy).
    delta: the maximal offset.
    swap: whether to swap the pixels rather than copy, see above.
  """
  height, width, channels = image.shape
  iters, nh, nw, _ = offsets.shape
  per_iter = nh * nw
  if iters * per_iter == 0:
    return image
  flat = offsets.reshape(iters * per_iter, 2).astype(jnp.int32)

  def body(t, x):
    r = t % per_iter
    h = height - delta - r // nw
    w = width - delta - r % nw
    dx, dy = flat[t, 0], flat[t, 1]
    hp, wp = h + dy, w + dx
    src = jax.lax.dynamic_slice(x, (hp, wp, 0), (1, 1, channels))
    if swap:
      dst = jax.lax.dynamic_slice(x, (h, w, 0), (1, 1, channels))
      x = jax.lax.dynamic_update_slice(x, dst, (hp, wp, 0))
    return jax.lax.dynamic_update_slice(x, src, (h, w, 0))

  return jax.lax.fori_loop(0, iters * per_iter, body, image, unroll=4)


def glass_offsets(key: jax.Array, height: int, width: int, delta: int,
                  iterations: int) -> jax.Array:
  """The random (dx, dy) offsets of `shuffle_pixels`, uniform integers in [-delta, delta)
  (numpy's `randint(-delta, delta)`)."""
  shape = (iterations, max(height - 2 * delta, 0), max(width - 2 * delta, 0), 2)
  return jax.random.randint(key, shape, -delta, delta, dtype=jnp.int32)


def glass_blur_with_offsets(image: jax.Array, offsets: jax.Array, sigma: float,
                            delta: int) -> jax.Array:
  """Glass blur given the shuffle offsets: Gaussian (skimage, `sigma`) -> truncation to
  uint8 levels (the reference's `np.uint8(... * 255)`) -> `shuffle_pixels` -> Gaussian."""
  x = filters.gaussian_filter(image, sigma)
  # np.uint8 truncates. Where the blurred value is within float32 rounding of a level
  # (flat regions), we may land one level off the reference's float64 truncation.
  x = jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0
  x = shuffle_pixels(x, offsets, delta)
  return filters.gaussian_filter(x, sigma)


def glass_blur(image: jax.Array, key: jax.Array, p: tuple[float, int, int]) -> jax.Array:
  """Glass blur, `p = (sigma, max_delta, iterations)`: see `glass_blur_with_offsets`.

  The shuffle is sequential (each step reads pixels written by earlier steps), so it
  runs as a `lax.fori_loop` of iterations x (H - 2 delta) x (W - 2 delta) single-pixel
  updates (~1e5 steps at 224 x 224): the slowest corruption here, though on 2 CPU cores
  a jitted batch of 8 224 x 224 images took ~0.3 s (64 32 x 32 images: ~0.04 s).
  As in the references the "swap" copies the neighbour's pixel (see `shuffle_pixels`).
  """
  sigma, delta, iterations = p
  height, width = image.shape[:2]
  offsets = glass_offsets(key, height, width, delta, iterations)
  return glass_blur_with_offsets(image, offsets, sigma, delta)


# ----------------------------------------------------------------------------- motion


def motion_blur(image: jax.Array, key: jax.Array, p: tuple[float, float]) -> jax.Array:
  """Linear motion blur at an angle ~ U(-45, 45) degrees, `p = (radius, sigma)`.

  CIFAR-10-C made this with ImageMagick's `MagickMotionBlurImage(radius, sigma, angle)`
  (Wand). We use the ImageMagick-free re-implementation of that kernel from
  `imagecorruptions` (`filters.motion_blur`: 2 radius + 1 taps with one-sided Gaussian
  weights along the angle, edge replication) for both tables, so 'cifar10' results are
  close to, but not bit-identical with, ImageMagick's.
  """
  radius, sigma = p
  angle = jax.random.uniform(key, (), jnp.float32, -45.0, 45.0)
  return filters.motion_blur(image, radius, sigma, angle)


# ----------------------------------------------------------------------------- zoom


def zoom_blur(image: jax.Array, key: jax.Array, zooms: Sequence[float]) -> jax.Array:
  """Zoom blur, `p = zoom factors`: the average of the image and its centre crops
  zoomed (bilinearly, as `scipy.ndimage.zoom(order=1)`) back to full size by each
  factor. The factors are the references' `np.arange(1, stop, step)` values, end
  points included where float rounding put them in (e.g. 1.06 in make_cifar_c.py's
  `np.arange(1, 1.06, 0.01)`, 7 factors)."""
  del key
  out = image
  for z in zooms:
    out = out + filters.clipped_zoom(image, float(z))
  return out / (len(zooms) + 1)


def _arange(stop: float, step: float) -> tuple[float, ...]:
  return tuple(float(z) for z in np.arange(1, stop, step))


# ----------------------------------------------------------------------------- gaussian


def gaussian_blur(image: jax.Array, key: jax.Array, sigma: float) -> jax.Array:
  """`skimage.filters.gaussian(x, sigma, channel_axis=-1)`: truncate 4, 'nearest' border."""
  del key
  return filters.gaussian_filter(image, sigma, mode="edge")


CORRUPTIONS = (
    Corruption("defocus_blur", defocus_blur, {
        "cifar10": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))}, random=False),
    Corruption("glass_blur", glass_blur, {
        "cifar10": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))},
               random=True),
    Corruption("motion_blur", motion_blur, {
        "cifar10": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))}, random=True),
    Corruption("zoom_blur", zoom_blur, {
        "cifar10": tuple(_arange(stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
        "imagenet": tuple(_arange(stop, step) for stop, step in (
            (1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)))},
               random=False),
    Corruption("gaussian_blur", gaussian_blur, {
        "cifar10": (0.4, 0.6, 0.7, 0.8, 1),
        "imagenet": (1, 2, 3, 4, 6)}, random=False),
)
