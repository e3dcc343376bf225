"""Image filters shared by the corruptions: per-channel 2-D convolution, Gaussian blur.

Images are (H, W, C) float32. Padding modes are numpy's (`jnp.pad`): 'edge' is
scipy/skimage 'nearest', 'symmetric' is scipy 'reflect' (cv2 BORDER_REFLECT), 'reflect'
is scipy 'mirror' (cv2 BORDER_REFLECT_101, cv2's default), 'constant' pads zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def depthwise_conv(image: jax.Array, kernel: jax.Array | np.ndarray, *,
                   mode: str = "reflect") -> jax.Array:
  """Correlates every channel of `image` (H, W, C) with the same 2-D `kernel` (kh, kw).

  Same-size output; the kernel's anchor is its centre (`kh // 2`, `kw // 2`), as cv2's
  default anchor. Padding by `mode` (numpy names).
  """
  kh, kw = kernel.shape
  c = image.shape[-1]
  top, left = kh // 2, kw // 2
  padded = jnp.pad(image, ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)), mode=mode)
  rhs = jnp.broadcast_to(jnp.asarray(kernel, image.dtype)[:, :, None, None], (kh, kw, 1, c))
  out = jax.lax.conv_general_dilated(
      padded[None], rhs, window_strides=(1, 1), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)
  return out[0]


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """scipy.ndimage's normalised 1-D Gaussian: radius `int(truncate * sigma + 0.5)`."""
  radius = int(truncate * float(sigma) + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / float(sigma)) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_filter(image: jax.Array, sigma: float, *, mode: str = "edge",
                    truncate: float = 4.0) -> jax.Array:
  """Gaussian blur of (H, W, C) over H and W, as `scipy.ndimage.gaussian_filter` /
  `skimage.filters.gaussian` (whose default border is 'nearest', i.e. 'edge')."""
  if sigma <= 0:
    return image
  k = gaussian_kernel_1d(sigma, truncate)
  out = depthwise_conv(image, k[:, None], mode=mode)
  return depthwise_conv(out, k[None, :], mode=mode)


def cv2_gaussian_kernel_1d(ksize: int, sigma: float) -> np.ndarray:
  """`cv2.getGaussianKernel(ksize, sigma)` (float32), for ports of cv2-based code."""
  x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
  k = np.exp(-(x ** 2) / (2 * sigma * sigma))
  return (k / k.sum()).astype(np.float32)


def motion_blur(image: jax.Array, radius: int, sigma: float, angle: jax.Array) -> jax.Array:
  """Linear motion blur of (H, W, C) along `angle` (degrees, may be traced).

  The line kernel of ImageMagick's `-motion-blur radius x sigma + angle`, as
  re-implemented without ImageMagick by `imagecorruptions`: `2 * radius + 1` taps with
  one-sided Gaussian weights, the i-th tap being the image shifted by
  `(-ceil(i sin(a) - 0.5), -ceil(i cos(a) - 0.5))` with edge replication.
  """
  height, width = image.shape[:2]
  taps = 2 * int(radius) + 1
  weights = np.exp(-np.arange(taps) ** 2 / (2.0 * sigma ** 2))
  weights = (weights / weights.sum()).astype(np.float32)
  rad = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
  rows, cols = jnp.arange(height), jnp.arange(width)
  out = jnp.zeros_like(image)
  for i in range(taps):
    dy = -jnp.ceil(i * jnp.sin(rad) - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * jnp.cos(rad) - 0.5).astype(jnp.int32)
    inside = (jnp.abs(dy) < height) & (jnp.abs(dx) < width)  # else the reference stops
    shifted = image[jnp.clip(rows - dy, 0, height - 1)][:, jnp.clip(cols - dx, 0, width - 1)]
    out = out + jnp.where(inside, weights[i], 0.0) * shifted
  return out


def _zoom_taps(size: int, zoom: float, centre_trim: bool):
  """1-D taps of the references' `clipped_zoom` along an axis of `size` pixels.

  Crop `crop = ceil(size / zoom)` pixels at offset `(size - crop) // 2`, zoom them with
  `scipy.ndimage.zoom(order=1)` to `out = round(crop * zoom)` pixels (scipy's default
  `grid_mode=False`: output i samples input `i (crop - 1) / (out - 1)` linearly), then
  keep `size` of them: the central ones (make_cifar_c.py) or the first ones
  (imagecorruptions crops `[:H, :W]`); the two agree when `out - size <= 1` (zoom < 1.5).
  Returns (i0, i1, frac): output i = (1 - frac) x[i0] + frac x[i1].
  """
  crop = int(np.ceil(size / zoom))
  top = (size - crop) // 2
  out = int(round(crop * zoom))
  trim = (out - size) // 2 if centre_trim else 0
  j = np.arange(size, dtype=np.float64) + trim
  scale = (crop - 1) / (out - 1) if out > 1 else 1.0
  coord = np.clip(j * scale, 0.0, crop - 1)
  i0 = np.minimum(np.floor(coord).astype(np.int64), crop - 1)
  i1 = np.minimum(i0 + 1, crop - 1)
  frac = (coord - i0).astype(np.float32)
  return i0 + top, i1 + top, frac


def clipped_zoom(x: jax.Array, zoom: float, *, centre_trim: bool = True) -> jax.Array:
  """The references' `clipped_zoom` of `x` (H, W, ...): a centre crop of about
  (H / zoom, W / zoom), zoomed back to H x W bilinearly as `scipy.ndimage.zoom(order=1)`
  (each axis from its own size; make_cifar_c.py used `ceil(H / zoom)` for both)."""
  height, width = x.shape[:2]
  r0, r1, rf = _zoom_taps(height, zoom, centre_trim)
  c0, c1, cf = _zoom_taps(width, zoom, centre_trim)
  rf = rf.reshape((-1,) + (1,) * (x.ndim - 1))
  cf = cf.reshape((1, -1) + (1,) * (x.ndim - 2))
  rows = x[r0] * (1.0 - rf) + x[r1] * rf
  return rows[:, c0] * (1.0 - cf) + rows[:, c1] * cf
