"""Weather corruptions: snow, frost, fog, spatter (extra).

Per-image functions `fn(image (H, W, 3) float32 in [0, 1], key, p)` (see `core`), pure
JAX, jittable with a traced image and key, for any H, W. All randomness comes from `key`.

Two parameter tables (copied numbers; our own code):
  'cifar10': CIFAR-10-C, `hendrycks/robustness` ImageNet-C/create_c/make_cifar_c.py.
  'imagenet': ImageNet-C as in `imagecorruptions` (imagecorruptions-imaug 1.1.5).
Each entry `p` carries its table's name where the two references differ in method
(snow's zoom crop, frost's texture scaling, fog's map size). Pixel-value parameters of
the references ([0, 255]) are divided by 255 here: the frost textures (uint8 / 255) and
spatter's Canny thresholds (50, 150 on the uint8 liquid layer, kept on a 0..255 copy).

Frost needs the six frost texture images: from the directory in the environment
variable `ADACORR_FROST_DIR` if set, else from the installed `imagecorruptions` package
(`pip install imagecorruptions-imaug`), found without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adacorr.corruptions import filters
from adacorr.corruptions.base import Corruption

_LUMA = (0.299, 0.587, 0.114)  # cv2 COLOR_RGB2GRAY


def _gray(image: jax.Array) -> jax.Array:
  return image @ jnp.asarray(_LUMA, image.dtype)


# -------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------- snow


class SnowParams(NamedTuple):
  loc: float        # mean of the normal snow layer
  scale: float      # its standard deviation
  zoom: float       # clipped_zoom factor
  threshold: float  # values below are set to 0
  radius: int       # motion blur radius
  sigma: float      # motion blur sigma
  blend: float      # weight of the image against max(image, 1.5 gray + 0.5)
  table: str


def snow(image: jax.Array, key: jax.Array, p: SnowParams) -> jax.Array:
  """Snow as both references: a normal(loc, scale) layer, clipped-zoomed, thresholded,
  clipped to [0, 1], motion-blurred at an angle U(-135, -45) (`filters.motion_blur`, the
  ImageMagick-free kernel of imagecorruptions; make_cifar_c.py used ImageMagick) and
  quantised to uint8 steps; the image becomes blend * x + (1 - blend) * max(x, 1.5 gray
  + 0.5) (gray = cv2 RGB2GRAY), plus the layer and the layer rotated by 180 degrees.
  'cifar10' keeps the central zoomed pixels and truncates the layer to uint8 before the
  blur (it goes through a PNG); 'imagenet' keeps the top-left ones.
  """
  height, width = image.shape[:2]
  k_layer, k_angle = jax.random.split(key)
  layer = p.loc + p.scale * jax.random.normal(k_layer, (height, width), jnp.float32)
  centre = p.table == "cifar10"
  layer = filters.clipped_zoom(layer, p.zoom, centre_trim=centre)
  layer = jnp.clip(jnp.where(layer < p.threshold, 0.0, layer), 0.0, 1.0)
  if centre:
    layer = jnp.floor(layer * 255.0) / 255.0
  angle = jax.random.uniform(k_angle, (), minval=-135.0, maxval=-45.0)
  layer = filters.motion_blur(layer[..., None], p.radius, p.sigma, angle)
  layer = jnp.round(layer * 255.0) / 255.0
  x = p.blend * image + (1.0 - p.blend) * jnp.maximum(image, _gray(image)[..., None] * 1.5 + 0.5)
  return x + layer + layer[::-1, ::-1]


# ---------------------------------------------------------------------------- frost

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg",
               "frost6.jpg")
FROST_DIR_ENV = "ADACORR_FROST_DIR"


def frost_dir() -> pathlib.Path:
  """The directory of the frost textures: `$ADACORR_FROST_DIR` if set, else the
  `frost/` folder of the installed `imagecorruptions` package (located without importing
  it, which would import cv2 and numba).

  Raises:
    FileNotFoundError: if neither holds the six frost images.
  """
  candidates = []
  if os.environ.get(FROST_DIR_ENV):
    candidates.append(pathlib.Path(os.environ[FROST_DIR_ENV]))
  else:
    try:
      spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
      spec = None
    if spec is not None and spec.submodule_search_locations:
      candidates += [pathlib.Path(loc) / "frost" for loc in spec.submodule_search_locations]
  for directory in candidates:
    if all((directory / f).is_file() for f in FROST_FILES):
      return directory
  where = (f"{FROST_DIR_ENV}={os.environ[FROST_DIR_ENV]!r}" if os.environ.get(FROST_DIR_ENV)
           else "the installed 'imagecorruptions' package (not found)" if not candidates
           else f"{candidates[0]}")
  raise FileNotFoundError(
      f"The frost corruption needs the frost texture images {', '.join(FROST_FILES)}; "
      f"they are not in {where}. Install them with `pip install imagecorruptions-imaug`, "
      f"or set the environment variable {FROST_DIR_ENV} to a directory holding them.")


def _resize_matrix_cv2(n_in: int, n_out: int, inv_scale: float, kind: str) -> np.ndarray:
  """(n_out, n_in) weights of cv2.resize along one axis: INTER_LINEAR ('linear', no
  antialiasing) or INTER_CUBIC ('cubic', a = -0.75), half-pixel centres
  src = (i + 0.5) / inv_scale - 0.5, replicated borders."""
  src = (np.arange(n_out) + 0.5) / inv_scale - 0.5
  m = np.zeros((n_out, n_in), np.float64)
  rows = np.arange(n_out)
  if kind == "linear":
    lo = np.floor(src).astype(int)
    w = src - lo
    np.add.at(m, (rows, np.clip(lo, 0, n_in - 1)), 1 - w)
    np.add.at(m, (rows, np.clip(lo + 1, 0, n_in - 1)), w)
    return m
  a = -0.75
  lo = np.floor(src).astype(int)
  t = src - lo
  for off in (-1, 0, 1, 2):
    d = np.abs(t - off)
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                 np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    np.add.at(m, (rows, np.clip(lo + off, 0, n_in - 1)), w)
  return m


def _cv2_resize(image: np.ndarray, size_hw: tuple[int, int], inv_scale_hw, kind: str):
  rows = _resize_matrix_cv2(image.shape[0], size_hw[0], inv_scale_hw[0], kind)
  cols = _resize_matrix_cv2(image.shape[1], size_hw[1], inv_scale_hw[1], kind)
  out = np.tensordot(rows, image.astype(np.float64), axes=(1, 0))  # (oh, w, c)
  out = np.tensordot(cols, out, axes=(1, 1)).transpose(1, 0, 2)  # (oh, ow, c)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _raw_textures(directory: str) -> tuple[np.ndarray, ...]:
  return tuple(np.asarray(Image.open(os.path.join(directory, f)).convert("RGB"))
               for f in FROST_FILES)


def frost_textures(height: int, width: int, table: str,
                   directory: str | os.PathLike | None = None) -> list[np.ndarray]:
  """The six frost textures (uint8 RGB), rescaled as `table`'s reference does for an
  (height, width) image.

  'cifar10' (make_cifar_c.py): `cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)` (bilinear);
  for images that do not fit in the result (beyond ~60 px) we enlarge the factor to
  fit (an extension). 'imagenet' (imagecorruptions): enlarge by the factor making it
  cover the image (1 if it already does), times 1.1, with `cv2.INTER_CUBIC`.
  The cv2 resizes are re-implemented in numpy (static, on the host, once).
  """
  directory = str(directory if directory is not None else frost_dir())
  return list(_scaled_textures(height, width, table, directory))


@functools.lru_cache(maxsize=None)
def _scaled_textures(height: int, width: int, table: str, directory: str):
  out = []
  for tex in _raw_textures(directory):
    th, tw = tex.shape[:2]
    if table == "cifar10":
      fx = 0.2
      size = (int(round(th * fx)), int(round(tw * fx)))
      if size[0] <= height or size[1] <= width:
        fx = max((height + 1) / th, (width + 1) / tw)
        size = (int(math.ceil(th * fx)), int(math.ceil(tw * fx)))
      out.append(_cv2_resize(tex, size, (fx, fx), "linear"))
    else:
      if th >= height and tw >= width:
        factor = 1.0
      elif th < height and tw >= width:
        factor = height / th
      elif th >= height and tw < width:
        factor = width / tw
      else:
        factor = max(height / th, width / tw)
      factor *= 1.1
      size = (int(math.ceil(th * factor)), int(math.ceil(tw * factor)))
      out.append(_cv2_resize(tex, size, (size[0] / th, size[1] / tw), "cubic"))
  return tuple(out)


class FrostParams(NamedTuple):
  image_weight: float
  frost_weight: float
  table: str


def frost(image: jax.Array, key: jax.Array, p: FrostParams) -> jax.Array:
  """image_weight * x + frost_weight * crop / 255, the crop (H, W) at a uniformly random
  position of a random frost texture (rescaled per `frost_textures`). As the references,
  'cifar10' draws the texture among the first five (np.random.randint(5)), 'imagenet'
  among all six; the crop's top-left corner is uniform in [0, size - H) x [0, size - W).
  The textures are static constants (loaded once); choice and crop come from `key`.
  """
  height, width = image.shape[:2]
  textures = frost_textures(height, width, p.table)
  count = 5 if p.table == "cifar10" else 6
  textures = textures[:count]
  max_h = max(t.shape[0] for t in textures)
  max_w = max(t.shape[1] for t in textures)
  stack = np.zeros((count, max_h, max_w, 3), np.uint8)
  for i, t in enumerate(textures):
    stack[i, :t.shape[0], :t.shape[1]] = t
  sizes = np.array([t.shape[:2] for t in textures], np.int32)
  k_idx, k_row, k_col = jax.random.split(key, 3)
  idx = jax.random.randint(k_idx, (), 0, count)
  size = jnp.asarray(sizes)[idx]
  row = jax.random.randint(k_row, (), 0, size[0] - height)
  col = jax.random.randint(k_col, (), 0, size[1] - width)
  crop = jax.lax.dynamic_slice(jnp.asarray(stack)[idx], (row, col, 0), (height, width, 3))
  return p.image_weight * image + p.frost_weight * (crop.astype(jnp.float32) / 255.0)


# ------------------------------------------------------------------------------ fog


def plasma_fractal(key: jax.Array, mapsize: int, wibbledecay: float) -> jax.Array:
  """(mapsize, mapsize) diamond-square height map in [0, 1], as the references'
  `plasma_fractal` (wibble starts at 100, noise wibble * U(-wibble, wibble), wibble /=
  wibbledecay per level), with the uniform draws from `key`. `mapsize`: a power of 2."""
  if isinstance(mapsize, bool) or not isinstance(mapsize, (int, np.integer)) or (
      mapsize < 2 or mapsize & (mapsize - 1)):
    raise ValueError(f"mapsize={mapsize!r} must be a power of 2 >= 2 (the diamond-square "
                     f"grid's side).")
  arr = jnp.zeros((mapsize, mapsize), jnp.float32)
  step = mapsize
  wibble = 100.0
  # one draw for all levels (cheaper to compile than one per level), cut in pieces
  sides = [mapsize // step for step in (mapsize >> k for k in range(int(math.log2(mapsize))))]
  offsets = np.cumsum([0] + [3 * n * n for n in sides])
  noise = jax.random.uniform(key, (int(offsets[-1]),), jnp.float32, -1.0, 1.0)
  level = 0

  def wibbled_mean(total, i, w):
    n = total.shape[0]
    start = int(offsets[i // 3]) + (i % 3) * n * n
    return total / 4 + w * w * noise[start:start + n * n].reshape(n, n)

  while step >= 2:
    half = step // 2
    corners = arr[0::step, 0::step]
    squares = corners + jnp.roll(corners, -1, axis=0)
    squares = squares + jnp.roll(squares, -1, axis=1)
    arr = arr.at[half::step, half::step].set(wibbled_mean(squares, 3 * level, wibble))
    dr = arr[half::step, half::step]
    ul = arr[0::step, 0::step]
    lt = dr + jnp.roll(dr, 1, axis=0) + ul + jnp.roll(ul, -1, axis=1)
    arr = arr.at[0::step, half::step].set(wibbled_mean(lt, 3 * level + 1, wibble))
    tt = dr + jnp.roll(dr, 1, axis=1) + ul + jnp.roll(ul, -1, axis=0)
    arr = arr.at[half::step, 0::step].set(wibbled_mean(tt, 3 * level + 2, wibble))
    step //= 2
    wibble /= wibbledecay
    level += 1
  arr = arr - arr.min()
  return arr / arr.max()


class FogParams(NamedTuple):
  strength: float
  decay: float
  table: str


def fog_mapsize(height: int, width: int, table: str) -> int:
  """32 for 'cifar10' (make_cifar_c.py; larger images get the next power of 2 covering
  them, an extension), the next power of 2 >= max(H, W) for 'imagenet' (imagecorruptions),
  at least 2 (the smallest diamond-square grid; a 1 x 1 image would otherwise get 1)."""
  need = max(2, 1 << (max(height, width) - 1).bit_length())
  return max(32, need) if table == "cifar10" else need


def fog(image: jax.Array, key: jax.Array, p: FogParams) -> jax.Array:
  """(x + s * plasma[:H, :W]) * max(x) / (max(x) + s), as both references (max over
  the whole image), the plasma fractal from `key` with wibble decay `p.decay`."""
  height, width = image.shape[:2]
  plasma = plasma_fractal(key, fog_mapsize(height, width, p.table), p.decay)[:height, :width]
  max_val = jnp.max(image)
  out = image + p.strength * plasma[..., None]
  return out * max_val / (max_val + p.strength)


# -------------------------------------------------------------------------- spatter


def _shift(a: jax.Array, dy: int, dx: int, fill) -> jax.Array:
  """out[i, j] = a[i + dy, j + dx], `fill` outside."""
  h, w = a.shape
  padded = jnp.pad(a, ((2, 2), (2, 2)), constant_values=fill)
  return padded[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]


def canny(u8: jax.Array, low: float, high: float) -> jax.Array:
  """Boolean edges of an (H, W) image with values 0..255, as cv2.Canny(img, low, high)
  (3x3 Sobel with replicated borders, L1 magnitude, cv2's 4-direction non-maximum
  suppression with its tie rules, hysteresis by 8-connectivity from magnitudes > high),
  the hysteresis as a `lax.while_loop` growing the strong edges to convergence."""
  x = u8.astype(jnp.float32)
  p = jnp.pad(x, 1, mode="edge")
  h, w = x.shape
  s = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  gx = (s(-1, 1) + 2 * s(0, 1) + s(1, 1)) - (s(-1, -1) + 2 * s(0, -1) + s(1, -1))
  gy = (s(1, -1) + 2 * s(1, 0) + s(1, 1)) - (s(-1, -1) + 2 * s(-1, 0) + s(-1, 1))
  mag = jnp.abs(gx) + jnp.abs(gy)
  ax, ay = jnp.abs(gx), jnp.abs(gy)
  tg22 = ax * (13573.0 / 32768.0)  # cv2: (int)(tan(22.5 deg) * 2^15 + 0.5)
  horizontal = ay < tg22
  vertical = ay > tg22 + 2 * ax
  m = lambda dy, dx: _shift(mag, dy, dx, 0.0)
  nms_h = (mag > m(0, -1)) & (mag >= m(0, 1))
  nms_v = (mag > m(-1, 0)) & (mag >= m(1, 0))
  opposite = (gx * gy) < 0  # cv2: s = -1 -> previous row at +1, next row at -1
  nms_d = jnp.where(opposite, (mag > m(-1, 1)) & (mag > m(1, -1)),
                    (mag > m(-1, -1)) & (mag > m(1, 1)))
  keep = jnp.where(horizontal, nms_h, jnp.where(vertical, nms_v, nms_d)) & (mag > low)
  strong = keep & (mag > high)

  def grow(state):
    edges, _ = state
    near = edges
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        if dy or dx:
          near = near | _shift(edges, dy, dx, False)
    new = edges | (keep & near)
    return new, jnp.any(new != edges)

  edges, _ = jax.lax.while_loop(lambda st: st[1], grow, (strong, jnp.asarray(True)))
  return edges


def chamfer_distance(zero: jax.Array, limit: float) -> jax.Array:
  """min(distance to the nearest True of `zero`, limit) with cv2.distanceTransform's
  DIST_L2 / 5x5 chamfer metric (steps 1, 1.4, 2.1969), by min-plus relaxation over
  enough iterations to reach `limit`. Pixels farther than `limit` (or all, without any
  zero) get `limit`, as after the reference's THRESH_TRUNC at `limit`."""
  big = jnp.float32(limit)
  dist = jnp.where(zero, 0.0, big)
  steps = [(dy, dx, 1.0) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
  steps += [(dy, dx, 1.4) for dy in (-1, 1) for dx in (-1, 1)]
  steps += [(dy, dx, 2.1969) for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2),
                                             (2, -1), (-1, -2), (-2, -1))]

  def relax(_, dist):
    best = dist
    for dy, dx, c in steps:
      best = jnp.minimum(best, _shift(dist, dy, dx, big) + c)
    return best

  # each pass extends the front by >= 1 pixel
  dist = jax.lax.fori_loop(0, int(math.ceil(limit)), relax, dist)
  return jnp.minimum(dist, big)


def _box3(a: jax.Array) -> jax.Array:
  """cv2.blur(a, (3, 3)) (BORDER_REFLECT_101)."""
  return filters.depthwise_conv(a[..., None], np.full((3, 3), 1 / 9, np.float32),
                                mode="reflect")[..., 0]


def equalize_hist(u8: jax.Array) -> jax.Array:
  """cv2.equalizeHist of integer values 0..255 (as floats)."""
  total = u8.size
  idx = u8.astype(jnp.int32).ravel()
  hist = jnp.zeros(256, jnp.int32).at[idx].add(1)
  first = jnp.argmax(hist > 0)
  first_count = hist[first]
  scale = jnp.float32(255.0) / jnp.maximum(total - first_count, 1).astype(jnp.float32)
  cum = jnp.cumsum(hist) - first_count
  lut = jnp.clip(jnp.round(cum.astype(jnp.float32) * scale), 0, 255)
  lut = jnp.where(jnp.arange(256) <= first, 0.0, lut)
  lut = jnp.where(first_count == total, first.astype(jnp.float32), lut)
  return lut[idx].reshape(u8.shape)


def water_layer(liquid: jax.Array) -> jax.Array:
  """The water branch of spatter up to the normalisation: (H, W) liquid layer (already
  thresholded) -> m in [0, 1] (see `spatter`)."""
  liquid_u8 = jnp.floor(jnp.clip(liquid * 255.0, 0.0, 255.0))
  edges = canny(liquid_u8, 50.0, 150.0)
  dist = chamfer_distance(edges, 20.0)
  dist = jnp.floor(_box3(dist))
  dist = equalize_hist(dist)
  ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
  dist = filters.depthwise_conv(dist[..., None], ker, mode="reflect")[..., 0]
  dist = _box3(jnp.clip(jnp.round(dist), 0, 255))
  m = liquid_u8 * dist
  peak = jnp.max(m)
  return jnp.where(peak > 0, m / jnp.where(peak > 0, peak, 1.0), 0.0)


class SpatterParams(NamedTuple):
  loc: float
  scale: float
  sigma: float      # Gaussian blur of the liquid layer
  threshold: float  # liquid below is set to 0
  intensity: float  # water: scale of the normalised layer; mud: blur sigma of the mask
  mud: int          # 0 water, 1 mud


def spatter(image: jax.Array, key: jax.Array, p: SpatterParams) -> jax.Array:
  """Spatter as both references (same code, other numbers): a normal(loc, scale)
  liquid layer, Gaussian-blurred (skimage, 'nearest' borders), thresholded.

  Water (mud == 0): liquid -> uint8; Canny(50, 150); distance transform to the edges
  (5x5 chamfer), truncated at 20; 3x3 box blur -> uint8; histogram equalisation;
  filter2D with [[-2,-1,0],[-1,1,1],[0,1,2]] saturated to uint8; 3x3 box blur; m =
  liquid * that, normalised by its max, times `intensity`; x + m * (175, 238, 238)/255.
  Mud (mud == 1): m = Gaussian(sigma=intensity) of (liquid > threshold), m < 0.8 -> 0;
  x * (1 - m) + m * (63, 42, 20)/255.

  Deviations (all in the water branch): Canny is our own jittable port (see `canny`),
  exact up to float-vs-int ties; liquid values above 1 are clipped to 255 where the
  reference's uint8 cast wraps (rare); when the layer has no liquid at all the
  reference divides 0 by 0 (NaN), we add nothing.
  """
  height, width = image.shape[:2]
  liquid = p.loc + p.scale * jax.random.normal(key, (height, width), jnp.float32)
  liquid = filters.gaussian_filter(liquid[..., None], p.sigma, mode="edge")[..., 0]
  liquid = jnp.where(liquid < p.threshold, 0.0, liquid)
  if p.mud == 0:
    m = water_layer(liquid) * p.intensity
    color = jnp.asarray([175.0, 238.0, 238.0], jnp.float32) / 255.0
    return image + m[..., None] * color
  mask = (liquid > p.threshold).astype(jnp.float32)
  m = filters.gaussian_filter(mask[..., None], p.intensity, mode="edge")[..., 0]
  m = jnp.where(m < 0.8, 0.0, m)
  color = jnp.asarray([63.0, 42.0, 20.0], jnp.float32) / 255.0
  return image * (1.0 - m[..., None]) + m[..., None] * color


# --------------------------------------------------------------------------- tables

_SNOW = {
    "cifar10": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "imagenet": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
}
_FROST = {
    "cifar10": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
}
_FOG = {
    "cifar10": ((.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)),
    "imagenet": ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)),
}
_SPATTER = {
    "cifar10": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "imagenet": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                 (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                 (0.67, 0.4, 1, 0.65, 1.5, 1)),
}

CORRUPTIONS: tuple[Corruption, ...] = (
    Corruption("snow", snow, {t: tuple(SnowParams(*c, table=t) for c in v)
                              for t, v in _SNOW.items()}, random=True),
    Corruption("frost", frost, {t: tuple(FrostParams(*c, table=t) for c in v)
                                for t, v in _FROST.items()}, random=True),
    Corruption("fog", fog, {t: tuple(FogParams(*c, table=t) for c in v)
                            for t, v in _FOG.items()}, random=True),
    Corruption("spatter", spatter, {t: tuple(SpatterParams(*c) for c in v)
                                    for t, v in _SPATTER.items()}, random=True),
)
