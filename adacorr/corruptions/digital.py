"""Digital corruptions: brightness, contrast, saturate, elastic_transform, pixelate, jpeg.

Per-image functions `fn(image (H, W, 3) float32 in [0, 1], key, p)` (see `core`), all
jittable with a traced image and key. All but `jpeg_compression` run on device in pure
JAX; `jpeg_compression` runs the real JPEG codec (PIL) on the host through
`jax.pure_callback`, so it also works inside `jax.jit` / `jax.vmap`.

Two parameter tables (copied numbers; our own code):
  'cifar10': CIFAR-10-C, `hendrycks/robustness` ImageNet-C/create_c/make_cifar_c.py.
  'imagenet': ImageNet-C as in `imagecorruptions` (imagecorruptions-imaug 1.1.5).
Where the two references differ in method (elastic_transform, pixelate) the entry `p`
carries its table's name and the function follows that reference. The references work
on [0, 255] images; every parameter here that the references give in pixel-value units
is divided by 255 (none of the tables below needs it: all are already in [0, 1] units or
are pixel distances).
"""

from __future__ import annotations

import io
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adacorr.corruptions import filters
from adacorr.corruptions.base import Corruption

# ----------------------------------------------------------------------------- HSV


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """(..., 3) RGB in [0, 1] -> HSV in [0, 1], as `skimage.color.rgb2hsv`.

  Hue where several channels share the maximum follows skimage (blue over green over
  red); hue and saturation are 0 where max == min; saturation is 0 where V == 0.
  """
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  safe_delta = jnp.where(delta == 0, 1.0, delta)
  s = jnp.where(delta == 0, 0.0, delta / jnp.where(v == 0, 1.0, v))
  h = (g - b) / safe_delta
  h = jnp.where(g == v, 2.0 + (b - r) / safe_delta, h)
  h = jnp.where(b == v, 4.0 + (r - g) / safe_delta, h)
  h = jnp.mod(h / 6.0, 1.0)
  h = jnp.where(delta == 0, 0.0, h)
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """(..., 3) HSV in [0, 1] -> RGB, as `skimage.color.hsv2rgb`."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = jnp.floor(h * 6.0)
  f = h * 6.0 - hi
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  hi = jnp.mod(hi, 6).astype(jnp.int32)
  choices = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1), jnp.stack([p, v, t], -1),
      jnp.stack([p, q, v], -1), jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)], 0)
  return jnp.take_along_axis(choices, hi[None, ..., None], axis=0)[0]


# ------------------------------------------------------------- brightness, contrast


def brightness(image: jax.Array, key: jax.Array, p: float) -> jax.Array:
  """V += p in HSV (clipped to [0, 1]), as both references (skimage HSV)."""
  del key
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + p, 0.0, 1.0))
  return hsv_to_rgb(hsv)


def saturate(image: jax.Array, key: jax.Array, p: tuple[float, float]) -> jax.Array:
  """S <- clip(S * p[0] + p[1], 0, 1) in HSV, as both references."""
  del key
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * p[0] + p[1], 0.0, 1.0))
  return hsv_to_rgb(hsv)


def contrast(image: jax.Array, key: jax.Array, p: float) -> jax.Array:
  """(x - mean) * p + mean, with the mean over H and W per channel (both references)."""
  del key
  means = jnp.mean(image, axis=(0, 1), keepdims=True)
  return (image - means) * p + means


# ------------------------------------------------------------------------- pixelate


def _pil_resize_matrix(in_size: int, out_size: int, resample: str) -> np.ndarray:
  """(out_size, in_size) weights of PIL's 1-D resampling of one axis.

  'box': PIL's `precompute_coeffs` with the box filter (`Image.BOX`), for reduction and
  enlargement alike. 'nearest': `Image.NEAREST` (PIL's ImagingScaleAffine: source index
  int(in/out * 0.5 + i * in/out) accumulated in double precision).
  """
  m = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  if resample == "nearest":  # ImagingScaleAffine: a double accumulated per pixel
    pos = scale * 0.5
    for i in range(out_size):
      m[i, min(max(int(pos), 0), in_size - 1)] = 1.0
      pos += scale
    return m
  filterscale = max(scale, 1.0)
  support = 0.5 * filterscale
  for i in range(out_size):
    center = (i + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), in_size)
    for x in range(xmin, xmax):
      u = (x - center + 0.5) / filterscale
      m[i, x] = 1.0 if -0.5 < u <= 0.5 else 0.0
    total = m[i].sum()
    if total:
      m[i] /= total
  return m


def _resize(image: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  hi = jax.lax.Precision.HIGHEST
  out = jnp.einsum("oh,hwc->owc", jnp.asarray(rows, jnp.float32), image, precision=hi)
  return jnp.einsum("pw,owc->opc", jnp.asarray(cols, jnp.float32), out, precision=hi)


class PixelateParams(NamedTuple):
  factor: float
  table: str  # 'cifar10': BOX down, BOX up; 'imagenet': BOX down, NEAREST up


def pixelate(image: jax.Array, key: jax.Array, p: PixelateParams) -> jax.Array:
  """PIL BOX down to (int(W * c), int(H * c)), then back up with BOX ('cifar10',
  make_cifar_c.py) or NEAREST ('imagenet', imagecorruptions), as static resampling
  matrices (PIL's own coefficients). PIL rounds to uint8 after each pass; we do not."""
  del key
  height, width = image.shape[:2]
  small_h, small_w = max(int(height * p.factor), 1), max(int(width * p.factor), 1)
  up = "box" if p.table == "cifar10" else "nearest"
  out = _resize(image, _pil_resize_matrix(height, small_h, "box"),
                _pil_resize_matrix(width, small_w, "box"))
  return _resize(out, _pil_resize_matrix(small_h, height, up),
                 _pil_resize_matrix(small_w, width, up))


# --------------------------------------------------------------------- jpeg (host)


def _jpeg_host(image: np.ndarray, quality: int) -> np.ndarray:
  """Host JPEG round trip of one (H, W, 3) float image, via PIL as the references."""
  u8 = np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(u8, "RGB").save(buffer, "JPEG", quality=int(quality))
  buffer.seek(0)
  decoded = np.asarray(Image.open(buffer).convert("RGB"), np.float32)
  return decoded / np.float32(255.0)


def jpeg_compression(image: jax.Array, key: jax.Array, p: int) -> jax.Array:
  """JPEG at quality `p` with the real codec (PIL, default 4:2:0 chroma subsampling, as
  the references' `Image.save(..., 'JPEG', quality=p)`).

  Not on device: the image is quantised to uint8 and encoded/decoded on the HOST through
  `jax.pure_callback` (one call per image under vmap), so it works inside `jax.jit`
  but costs a device->host->device round trip and is not differentiable.
  """
  del key
  shape = jax.ShapeDtypeStruct(image.shape, jnp.float32)
  return jax.pure_callback(lambda x: _jpeg_host(x, p), shape, image.astype(jnp.float32),
                           vmap_method="sequential")


# ---------------------------------------------------------------- elastic transform


class ElasticParams(NamedTuple):
  """'cifar10' (make_cifar_c.py): alpha, sigma, affine as fractions of the image size
  (the reference's IMSIZE = 32; we use min(H, W)). 'imagenet' (imagecorruptions):
  alpha in pixels; sigma = 0.01 * (H, W) and max displacement 0.005 * H, fixed."""
  alpha: float
  sigma: float
  affine: float
  table: str


def _gaussian_2d(field: jax.Array, sigma_h: float, sigma_w: float, *, mode: str,
                 truncate: float) -> jax.Array:
  """Separable Gaussian of an (H, W) field with per-axis sigma (scipy semantics)."""
  out = field[..., None]
  if sigma_h > 0:
    out = filters.depthwise_conv(out, filters.gaussian_kernel_1d(sigma_h, truncate)[:, None],
                                 mode=mode)
  if sigma_w > 0:
    out = filters.depthwise_conv(out, filters.gaussian_kernel_1d(sigma_w, truncate)[None, :],
                                 mode=mode)
  return out[..., 0]


def sample_bilinear(image: jax.Array, rows: jax.Array, cols: jax.Array, mode: str) -> jax.Array:
  """Bilinear samples of (H, W, C) at float (rows, cols) of shape (H', W'), per channel,
  with `jax.scipy.ndimage.map_coordinates` border `mode` (scipy names: 'reflect' is
  half-sample symmetric, 'mirror' is cv2 BORDER_REFLECT_101)."""
  return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., ch], [rows, cols], order=1,
                                                      mode=mode)
                    for ch in range(image.shape[-1])], axis=-1)


def affine_from_points(src: jax.Array, dst: jax.Array) -> jax.Array:
  """The 2x3 affine M with M @ [x, y, 1] = dst for 3 point pairs (cv2.getAffineTransform)."""
  a = jnp.concatenate([src, jnp.ones((3, 1), src.dtype)], axis=1)  # (3, 3)
  return jnp.linalg.solve(a, dst).T


def warp_affine(image: jax.Array, m: jax.Array) -> jax.Array:
  """`cv2.warpAffine(image, M, (W, H), borderMode=BORDER_REFLECT_101)` with bilinear
  interpolation: dst(x, y) = src(M^-1 (x, y)). (cv2 quantises coordinates to 1/32 px.)"""
  height, width = image.shape[:2]
  lin, t = m[:, :2], m[:, 2]
  inv = jnp.linalg.inv(lin)
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  px, py = xs - t[0], ys - t[1]
  sx = inv[0, 0] * px + inv[0, 1] * py
  sy = inv[1, 0] * px + inv[1, 1] * py
  return sample_bilinear(image, sy, sx, "mirror")


def elastic_transform(image: jax.Array, key: jax.Array, p: ElasticParams) -> jax.Array:
  """Elastic deformation: displacement fields of uniform noise smoothed by a Gaussian
  (skimage `gaussian(mode='reflect', truncate=3)`) times alpha, sampled bilinearly with
  scipy 'reflect' borders (`map_coordinates(order=1, mode='reflect')`).

  'cifar10' (make_cifar_c.py) first applies the random affine warp: the three points
  centre + (s, s), centre + (s, -s), centre - s (s = min(H, W) // 3, at least 1) each moved by
  U(-affine, affine), `cv2.warpAffine` with BORDER_REFLECT_101; the noise is U(-1, 1).
  'imagenet' (imagecorruptions) has no affine; the noise is U(-0.005 H, 0.005 H) and
  sigma = 0.01 (H, W).
  """
  height, width = image.shape[:2]
  k_affine, k_dx, k_dy = jax.random.split(key, 3)
  if p.table == "cifar10":
    size = min(height, width)
    alpha, sigma, affine = p.alpha * size, p.sigma * size, p.affine * size
    centre = np.float32([height, width]) // 2  # as the reference: (H//2, W//2) as (x, y)
    # The reference's min(H, W) // 3 is 0 for images of side <= 2: three equal points, a
    # singular affine fit and NaN images. At least 1 px keeps the fit regular (the same
    # for every side >= 3).
    square = max(min(height, width) // 3, 1)
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square],
                       centre - square])
    pts2 = pts1 + jax.random.uniform(k_affine, (3, 2), minval=-affine, maxval=affine)
    image = warp_affine(image, affine_from_points(jnp.asarray(pts1), pts2))
    sig_h = sig_w = sigma
    max_d = 1.0
  else:
    alpha = p.alpha
    sig_h, sig_w = 0.01 * height, 0.01 * width
    max_d = 0.005 * height
  fields = []
  for k in (k_dx, k_dy):
    noise = jax.random.uniform(k, (height, width), minval=-max_d, maxval=max_d)
    fields.append(_gaussian_2d(noise, sig_h, sig_w, mode="symmetric", truncate=3.0) * alpha)
  dx, dy = fields
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  return sample_bilinear(image, ys + dy, xs + dx, "reflect")


# --------------------------------------------------------------------------- tables

_ELASTIC_CIFAR = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                  (0.1, 0.03, 0.03))
_ELASTIC_IMAGENET = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)

CORRUPTIONS: tuple[Corruption, ...] = (
    Corruption("brightness", brightness, {
        "cifar10": (.05, .1, .15, .2, .3),
        "imagenet": (.1, .2, .3, .4, .5)}, random=False),
    Corruption("contrast", contrast, {
        "cifar10": (.75, .5, .4, .3, .15),
        "imagenet": (.4, .3, .2, .1, .05)}, random=False),
    Corruption("saturate", saturate, {
        "cifar10": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))}, random=False),
    Corruption("elastic_transform", elastic_transform, {
        "cifar10": tuple(ElasticParams(a, s, f, "cifar10") for a, s, f in _ELASTIC_CIFAR),
        "imagenet": tuple(ElasticParams(a, 0.0, 0.0, "imagenet") for a in _ELASTIC_IMAGENET)},
               random=True),
    Corruption("pixelate", pixelate, {
        "cifar10": tuple(PixelateParams(c, "cifar10") for c in (.95, .9, .85, .75, .65)),
        "imagenet": tuple(PixelateParams(c, "imagenet") for c in (.6, .5, .4, .3, .25))},
               random=False),
    Corruption("jpeg_compression", jpeg_compression, {
        "cifar10": (80, 65, 58, 50, 40),
        "imagenet": (25, 18, 15, 10, 7)}, random=False),
)
