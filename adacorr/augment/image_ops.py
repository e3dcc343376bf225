"""PIL's AugMix image operations in JAX, exact on the uint8 grid.

Public ops take ONE image `(H, W, C)` floating point in [0, 1], C = 1 (PIL mode 'L') or
3 ('RGB'), and return a float32 image of the same shape on the grid `k / 255`. Like PIL
they work on 256 levels: the input is rounded to `u = round(255 x)` first, so for
`x = u8 / 255` the result is `PIL_op(u8) / 255`:

  autocontrast, equalize, posterize, solarize   ImageOps (per-channel lookup tables)
  rotate, shear_x, shear_y, translate_x, _y     Image.rotate / Image.transform(AFFINE),
                                                bilinear, black fill
  color, contrast, brightness, sharpness        ImageEnhance (Image.blend with a
                                                degenerate image)

The lookup tables and blends match PIL exactly (including its truncations and the double
precision rounding of autocontrast's table). The bilinear ops follow PIL's sampling rule
exactly but compute coordinates in float32 where PIL uses double, so a few pixels differ
by one level.

The `*_levels`, `*_lut`, `*_matrix` and `*_degenerate` functions are the building blocks,
on level images `u` (float32 holding integers in 0..255): AugMix (`adacorr.augment.augmix`)
samples one op per chain step and runs them on levels without leaving the grid. All
functions are pure and jittable; op parameters may be traced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

LEVELS = 256

# PIL's RGB -> L conversion: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (Convert.c),
# i.e. R * 299/1000 + G * 587/1000 + B * 114/1000 rounded to the nearest level.
_L_WEIGHTS = (19595, 38470, 7471)

# ImageFilter.SMOOTH: 3x3 kernel / 13, border pixels copied.
_SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32)
_SMOOTH_SCALE = 13.0


# --------------------------------------------------------------------------- levels


def _check_image(image, name: str = "image") -> None:
  shape = jnp.shape(image)
  if len(shape) != 3 or shape[-1] not in (1, 3):
    raise ValueError(f"{name} must be one (H, W, C) image with C = 1 or 3, got shape {shape}.")


def to_levels(image: Array) -> Array:
  """[0, 1] image -> float32 levels `round(255 x)` in 0..255 (same shape)."""
  return jnp.round(jnp.clip(jnp.asarray(image, jnp.float32), 0.0, 1.0) * 255.0)


def from_levels(u: Array) -> Array:
  """Levels in 0..255 -> float32 image in [0, 1]."""
  return u / 255.0


def gray_levels(u: Array) -> Array:
  """(H, W, C) levels -> (H, W) levels of PIL's 'L' conversion (the channel if C = 1)."""
  if u.shape[-1] == 1:
    return u[..., 0]
  ui = u.astype(jnp.int32)
  acc = sum(w * ui[..., i] for i, w in enumerate(_L_WEIGHTS)) + (1 << 15)
  return jnp.right_shift(acc, 16).astype(jnp.float32)


# --------------------------------------------------------------------------- lookup tables


def apply_lut(u: Array, lut: Array) -> Array:
  """Levels (H, W, C) through per-channel tables `lut` (C, 256) or one table (256,)."""
  c = u.shape[-1]
  lut = jnp.broadcast_to(jnp.asarray(lut, jnp.int32), (c, LEVELS))
  idx = u.astype(jnp.int32) + LEVELS * jnp.arange(c, dtype=jnp.int32)
  return jnp.take(lut.reshape(-1), idx, mode="clip").astype(jnp.float32)


def histogram(u: Array) -> Array:
  """(C, 256) int32 per-channel histograms of levels (H, W, C), as `Image.histogram()`."""
  c = u.shape[-1]
  idx = (u.astype(jnp.int32) + LEVELS * jnp.arange(c, dtype=jnp.int32)).reshape(-1)
  counts = jnp.zeros((c * LEVELS,), jnp.int32).at[idx].add(1, mode="drop")
  return counts.reshape(c, LEVELS)


@functools.cache
def _autocontrast_fixups() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Where PIL's double-precision table falls one level below the exact one.

  `ImageOps.autocontrast` sets `lut[i] = int(i * scale - lo * scale)` with
  `scale = 255.0 / (hi - lo)`; when `255 (i - lo) / (hi - lo)` is an integer the double
  result can land just below it (e.g. lo = 0, hi = 25: lut[25] = 254). Returns
  `(pairs, starts, levels, max_per_pair)`: the sorted `lo * 256 + hi` that have such `i`
  (lo < hi), offsets into `levels`, and the levels `i` of each pair.
  """
  i = np.arange(LEVELS)
  pairs, counts, levels = [], [], []
  for lo in range(LEVELS - 1):
    hi = np.arange(lo + 1, LEVELS)[:, None]
    scale = 255.0 / (hi - lo)
    pil = np.trunc(i * scale + (-lo * scale))  # same double operations as PIL's Python
    exact = np.floor_divide(255 * (i - lo), hi - lo)
    rows, cols = np.nonzero((pil != exact) & (i >= lo) & (i <= hi))
    for r in np.unique(rows):
      pairs.append(lo * LEVELS + lo + 1 + r)
      counts.append(int(np.sum(rows == r)))
    levels.append(cols)
  starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
  return (np.asarray(pairs, np.int32), starts, np.concatenate(levels).astype(np.int32),
          max(counts))


def _autocontrast_lut_1(lo: Array, hi: Array) -> Array:
  """(256,) table of one channel with darkest level `lo` and lightest `hi`."""
  pairs, starts, levels, most = _autocontrast_fixups()
  i = jnp.arange(LEVELS, dtype=jnp.int32)
  span = jnp.maximum(hi - lo, 1)
  lut = jnp.clip(jnp.floor_divide(255 * (i - lo), span), 0, 255)
  pair = lo * LEVELS + hi
  k = jnp.minimum(jnp.searchsorted(jnp.asarray(pairs), pair), len(pairs) - 1)
  found = jnp.asarray(pairs)[k] == pair
  start = jnp.asarray(starts)[k]
  stop = jnp.where(found, jnp.asarray(starts)[k + 1], start)
  j = start + jnp.arange(most, dtype=jnp.int32)
  fix_levels = jnp.asarray(levels)[jnp.minimum(j, len(levels) - 1)]
  fix = jnp.zeros((LEVELS,), jnp.int32).at[fix_levels].add((j < stop).astype(jnp.int32))
  return jnp.where(hi > lo, lut - fix, i)


def autocontrast_lut(u: Array) -> Array:
  """(C, 256) tables of `ImageOps.autocontrast(im)` (no cutoff) for levels (H, W, C)."""
  flat = u.reshape(-1, u.shape[-1]).astype(jnp.int32)
  return jax.vmap(_autocontrast_lut_1)(jnp.min(flat, axis=0), jnp.max(flat, axis=0))


def _equalize_lut_1(h: Array) -> Array:
  i = jnp.arange(LEVELS, dtype=jnp.int32)
  n = jnp.sum(h)
  last = jnp.max(jnp.where(h > 0, i, -1))
  step = (n - h[jnp.maximum(last, 0)]) // 255
  before = jnp.cumsum(h) - h  # pixels below each level
  lut = jnp.minimum((jnp.maximum(step, 1) // 2 + before) // jnp.maximum(step, 1), 255)
  return jnp.where((jnp.sum(h > 0) > 1) & (step > 0), lut, i)


def equalize_lut(u: Array) -> Array:
  """(C, 256) tables of `ImageOps.equalize(im)` for levels (H, W, C).

  Per channel: `step = (n - count of the last non-empty level) // 255`; identity when at
  most one level is used or step = 0; else `lut[i] = (step // 2 + #pixels below i) // step`
  (at most 255, as PIL clips).
  """
  return jax.vmap(_equalize_lut_1)(histogram(u))


def posterize_lut(bits) -> Array:
  """(256,) table of `ImageOps.posterize(im, bits)`: keeps the top `bits` (1..8) bits."""
  i = jnp.arange(LEVELS, dtype=jnp.int32)
  drop = jnp.left_shift(1, 8 - jnp.asarray(bits, jnp.int32))
  return i - jnp.remainder(i, drop)


def solarize_lut(threshold) -> Array:
  """(256,) table of `ImageOps.solarize(im, threshold)`: levels >= threshold inverted."""
  i = jnp.arange(LEVELS, dtype=jnp.int32)
  return jnp.where(i < jnp.asarray(threshold), i, 255 - i)


# --------------------------------------------------------------------------- affine


def identity_matrix() -> Array:
  return jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], jnp.float32)


def rotate_matrix(degrees, height: int, width: int) -> Array:
  """(6,) inverse affine matrix of `Image.rotate(degrees)` (counter-clockwise, about the
  centre, same size)."""
  angle = -jnp.deg2rad(jnp.remainder(jnp.asarray(degrees, jnp.float32), 360.0))
  snap = lambda v: jnp.where(jnp.abs(v) < 1e-6, 0.0, jnp.where(jnp.abs(v) > 1 - 1e-6,
                                                               jnp.sign(v), v))
  cos, sin = snap(jnp.cos(angle)), snap(jnp.sin(angle))  # PIL: round(.., 15)
  cx, cy = width / 2.0, height / 2.0
  c = cos * -cx + sin * -cy + cx
  f = -sin * -cx + cos * -cy + cy
  return jnp.stack([cos, sin, c, -sin, cos, f]).astype(jnp.float32)


def shear_x_matrix(factor) -> Array:
  """(6,) matrix `(1, factor, 0, 0, 1, 0)`: out[y, x] = in[y, x + factor * y]."""
  z, o, f = jnp.float32(0), jnp.float32(1), jnp.asarray(factor, jnp.float32)
  return jnp.stack([o, f, z, z, o, z])


def shear_y_matrix(factor) -> Array:
  """(6,) matrix `(1, 0, 0, factor, 1, 0)`: out[y, x] = in[y + factor * x, x]."""
  z, o, f = jnp.float32(0), jnp.float32(1), jnp.asarray(factor, jnp.float32)
  return jnp.stack([o, z, z, f, o, z])


def translate_x_matrix(pixels) -> Array:
  """(6,) matrix `(1, 0, pixels, 0, 1, 0)`: out[y, x] = in[y, x + pixels]."""
  z, o, t = jnp.float32(0), jnp.float32(1), jnp.asarray(pixels, jnp.float32)
  return jnp.stack([o, z, t, z, o, z])


def translate_y_matrix(pixels) -> Array:
  """(6,) matrix `(1, 0, 0, 0, 1, pixels)`: out[y, x] = in[y + pixels, x]."""
  z, o, t = jnp.float32(0), jnp.float32(1), jnp.asarray(pixels, jnp.float32)
  return jnp.stack([o, z, z, z, o, t])


def affine_levels(u: Array, matrix: Array) -> Array:
  """`Image.transform(size, AFFINE, matrix, BILINEAR)` on levels (H, W, C), same size.

  Output pixel (x, y) samples the input at `(a (x+.5) + b (y+.5) + c, d (x+.5) + e (y+.5)
  + f)` for `matrix = (a, b, c, d, e, f)`: black (0) outside [0, W) x [0, H), else
  bilinear between the 4 nearest pixel centres (edge pixels repeated), truncated to a
  level as PIL does.
  """
  h, w, c = u.shape
  a0, a1, a2, a3, a4, a5 = (matrix[i] for i in range(6))
  ys = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5
  xs = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5
  xin = a0 * xs + a1 * ys + a2
  yin = a3 * xs + a4 * ys + a5
  inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
  xf, yf = jnp.floor(xin - 0.5), jnp.floor(yin - 0.5)
  dx, dy = (xin - 0.5 - xf)[..., None], (yin - 0.5 - yf)[..., None]
  x0 = jnp.clip(xf, 0, w - 1).astype(jnp.int32)
  x1 = jnp.clip(xf + 1, 0, w - 1).astype(jnp.int32)
  y0 = jnp.clip(yf, 0, h - 1).astype(jnp.int32)
  y1 = jnp.clip(yf + 1, 0, h - 1).astype(jnp.int32)
  flat = u.reshape(h * w, c)
  at = lambda yy, xx: jnp.take(flat, (yy * w + xx).reshape(-1), axis=0).reshape(h, w, c)
  p00, p01, p10, p11 = at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1)
  v1 = p00 + (p01 - p00) * dx
  v2 = jnp.where(((yf + 1 >= 0) & (yf + 1 < h))[..., None], p10 + (p11 - p10) * dx, v1)
  v = v1 + (v2 - v1) * dy
  return jnp.where(inside[..., None], jnp.floor(jnp.clip(v, 0.0, 255.0)), 0.0)


# --------------------------------------------------------------------------- enhance


def blend_levels(degenerate: Array, u: Array, factor) -> Array:
  """`Image.blend(degenerate, u, factor)`: trunc(clip(d + factor (u - d), 0, 255)), in
  float32 as PIL; factor 1 gives `u`, 0 gives `degenerate`, > 1 extrapolates."""
  f = jnp.asarray(factor, jnp.float32)
  return jnp.floor(jnp.clip(degenerate + f * (u - degenerate), 0.0, 255.0))


def color_degenerate(u: Array) -> Array:
  """`ImageEnhance.Color`'s degenerate: the 'L' image in every channel (u itself if C = 1)."""
  return jnp.broadcast_to(gray_levels(u)[..., None], u.shape)


def contrast_degenerate(u: Array) -> Array:
  """`ImageEnhance.Contrast`'s degenerate: constant `int(mean of 'L' + 0.5)`."""
  g = gray_levels(u).astype(jnp.int32)
  n = g.size
  mean = (2 * jnp.sum(g) + n) // (2 * n)
  return jnp.full(u.shape, mean, jnp.float32)


def brightness_degenerate(u: Array) -> Array:
  """`ImageEnhance.Brightness`'s degenerate: black."""
  return jnp.zeros_like(u)


def sharpness_degenerate(u: Array) -> Array:
  """`ImageEnhance.Sharpness`'s degenerate: `filter(SMOOTH)`, round(3x3 sum / 13) inside,
  border pixels unchanged."""
  h, w, _ = u.shape
  p = jnp.pad(u, ((1, 1), (1, 1), (0, 0)))
  s = sum(float(_SMOOTH_KERNEL[i, j]) * p[i:i + h, j:j + w]
          for i in range(3) for j in range(3))
  smooth = jnp.floor(jnp.clip(s / _SMOOTH_SCALE + 0.5, 0.0, 255.0))
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  interior = (ys > 0) & (ys < h - 1) & (xs > 0) & (xs < w - 1)
  return jnp.where(interior[..., None], smooth, u)


# --------------------------------------------------------------------------- public ops


def _lut_op(image, make_lut):
  _check_image(image)
  u = to_levels(image)
  return from_levels(apply_lut(u, make_lut(u)))


def _affine_op(image, make_matrix):
  _check_image(image)
  u = to_levels(image)
  return from_levels(affine_levels(u, make_matrix(*u.shape[:2])))


def _enhance_op(image, degenerate, factor):
  _check_image(image)
  u = to_levels(image)
  return from_levels(blend_levels(degenerate(u), u, factor))


def autocontrast(image: Array) -> Array:
  """`ImageOps.autocontrast`: per channel, the darkest level -> 0, the lightest -> 255."""
  return _lut_op(image, autocontrast_lut)


def equalize(image: Array) -> Array:
  """`ImageOps.equalize`: per-channel histogram equalisation."""
  return _lut_op(image, equalize_lut)


def posterize(image: Array, bits) -> Array:
  """`ImageOps.posterize`: keeps the top `bits` (int 1..8) bits of each level."""
  if not isinstance(bits, jax.core.Tracer) and not 1 <= int(bits) <= 8:
    raise ValueError(f"bits={bits!r} must be in 1..8.")
  return _lut_op(image, lambda u: posterize_lut(bits))


def solarize(image: Array, threshold=128) -> Array:
  """`ImageOps.solarize`: inverts every level >= `threshold` (a level, 0..256)."""
  return _lut_op(image, lambda u: solarize_lut(threshold))


def rotate(image: Array, degrees) -> Array:
  """`Image.rotate(degrees, BILINEAR)`: counter-clockwise about the centre, black fill."""
  return _affine_op(image, lambda h, w: rotate_matrix(degrees, h, w))


def shear_x(image: Array, factor) -> Array:
  """`transform(AFFINE, (1, factor, 0, 0, 1, 0), BILINEAR)`: out[y, x] = in[y, x + f y]."""
  return _affine_op(image, lambda h, w: shear_x_matrix(factor))


def shear_y(image: Array, factor) -> Array:
  """`transform(AFFINE, (1, 0, 0, factor, 1, 0), BILINEAR)`: out[y, x] = in[y + f x, x]."""
  return _affine_op(image, lambda h, w: shear_y_matrix(factor))


def translate_x(image: Array, pixels) -> Array:
  """`transform(AFFINE, (1, 0, pixels, 0, 1, 0), BILINEAR)`: out[y, x] = in[y, x + pixels]
  (positive `pixels` moves the content left), black fill."""
  return _affine_op(image, lambda h, w: translate_x_matrix(pixels))


def translate_y(image: Array, pixels) -> Array:
  """`transform(AFFINE, (1, 0, 0, 0, 1, pixels), BILINEAR)`: out[y, x] = in[y + pixels, x]
  (positive `pixels` moves the content up), black fill."""
  return _affine_op(image, lambda h, w: translate_y_matrix(pixels))


def color(image: Array, factor) -> Array:
  """`ImageEnhance.Color(im).enhance(factor)`: 0 gray, 1 identity (identity for C = 1)."""
  return _enhance_op(image, color_degenerate, factor)


def contrast(image: Array, factor) -> Array:
  """`ImageEnhance.Contrast(im).enhance(factor)`: 0 the mean gray level, 1 identity."""
  return _enhance_op(image, contrast_degenerate, factor)


def brightness(image: Array, factor) -> Array:
  """`ImageEnhance.Brightness(im).enhance(factor)`: 0 black, 1 identity."""
  return _enhance_op(image, brightness_degenerate, factor)


def sharpness(image: Array, factor) -> Array:
  """`ImageEnhance.Sharpness(im).enhance(factor)`: 0 smoothed, 1 identity, 2 sharpened."""
  return _enhance_op(image, sharpness_degenerate, factor)

