"""Standard image augmentation on device: key-driven, jittable, independent per example.

Every function takes a batch `images` of shape `(B, H, W, C)`, floating point in
[0, 1], and a `jax.random` key, and returns a batch of the same dtype in [0, 1].
Example `i` uses `jax.random.split(key, B)[i]`. The functions are jitted (their
options static), so they are cheap to call eagerly and inline under `jax.jit`.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Augment = Callable[[jax.Array, jax.Array], jax.Array]


def _check_images(images) -> None:
  if getattr(images, "ndim", None) != 4:
    raise ValueError(
        f"images must have rank 4 (B, H, W, C), got shape {jnp.shape(images)}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f"images must be floating point in [0, 1], got dtype {images.dtype}.")


def _flip_one(image: jax.Array, key: jax.Array) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def flip(images: jax.Array, key: jax.Array) -> jax.Array:
  """Flips each image left-right with probability 1/2: `(B, H, W, C)` -> same."""
  _check_images(images)
  return _flip(images, key)


@jax.jit
def _flip(images, key):
  return jax.vmap(_flip_one)(images, jax.random.split(key, images.shape[0]))


def pad_crop_flip(images: jax.Array, key: jax.Array, *, pad: int = 4) -> jax.Array:
  """Zero-pads by `pad`, takes a random `H x W` window, flips it with p = 1/2.

  As torchvision's `RandomCrop(size, padding=pad)` + `RandomHorizontalFlip()`.

  Args:
    images: `(B, H, W, C)` floating point in [0, 1].
    key: PRNG key.
    pad: zero padding on each side, in pixels.

  Returns:
    `(B, H, W, C)`, same dtype, in [0, 1].
  """
  _check_images(images)
  if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
    raise ValueError(f"pad must be a non-negative int, got {pad!r}.")
  return _pad_crop_flip(images, key, pad)


@functools.partial(jax.jit, static_argnums=2)
def _pad_crop_flip(images, key, pad):
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(image, key):
    crop_key, flip_key = jax.random.split(key)
    dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
    crop = jax.lax.dynamic_slice(image, (dy, dx, 0), (h, w, c))
    return _flip_one(crop, flip_key)

  return jax.vmap(one)(padded, jax.random.split(key, images.shape[0]))


def _crop_box(key: jax.Array, height: int, width: int, scale: Sequence[float],
              ratio: Sequence[float], attempts: int = 10):
  """Inception crop `(top, left, h, w)` as torchvision's `RandomResizedCrop`.

  Tries `attempts` (area fraction, aspect ratio) draws and keeps the first that
  fits; if none does, the largest central crop with an aspect ratio within `ratio`.
  """
  # One draw of uniforms (cheaper to compile than one per quantity).
  u = jax.random.uniform(key, (2 * attempts + 2,))
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[attempts:2 * attempts])
  ws = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  hs = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (ws > 0) & (hs > 0) & (ws <= width) & (hs <= height)
  first = jnp.argmax(fits)
  # Fallback (static): the whole image, cut to the nearest allowed aspect ratio.
  if width / height < min(ratio):
    fw, fh = width, int(round(width / min(ratio)))
  elif width / height > max(ratio):
    fw, fh = int(round(height * max(ratio))), height
  else:
    fw, fh = width, height
  found = fits.any()
  w = jnp.where(found, ws[first], fw)
  h = jnp.where(found, hs[first], fh)

  def offset(u, room):  # uniform integer in [0, room]
    return jnp.minimum(jnp.floor(u * (room + 1)).astype(jnp.int32), room)

  top = jnp.where(found, offset(u[-2], height - h), (height - fh) // 2)
  left = jnp.where(found, offset(u[-1], width - w), (width - fw) // 2)
  return top, left, h, w


def random_resized_crop_flip(images: jax.Array, key: jax.Array, *, size: int,
                             scale: Sequence[float] = (0.08, 1.0),
                             ratio: Sequence[float] = (3 / 4, 4 / 3)) -> jax.Array:
  """Inception-style random-resized crop to `size x size`, then a random flip.

  Per example: a box covering a fraction in `scale` of the image area with aspect
  ratio (w/h) in `ratio` (log-uniform), as torchvision's `RandomResizedCrop`,
  resized bilinearly (antialiased when shrinking) with
  `jax.image.scale_and_translate`; then a left-right flip with p = 1/2.

  Args:
    images: `(B, H, W, C)` floating point in [0, 1].
    key: PRNG key.
    size: output height and width.
    scale: range of the crop's area as a fraction of the image area, in (0, 1].
    ratio: range of the crop's aspect ratio w/h, positive.

  Returns:
    `(B, size, size, C)`, same dtype, in [0, 1].
  """
  _check_images(images)
  if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
    raise ValueError(f"size must be a positive int, got {size!r}.")
  if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {scale!r}.")
  if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio!r}.")
  return _random_resized_crop_flip(images, key, size, tuple(map(float, scale)),
                                   tuple(map(float, ratio)))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _random_resized_crop_flip(images, key, size, scale, ratio):
  _, height, width, channels = images.shape

  def one(image, key):
    box_key, flip_key = jax.random.split(key)
    top, left, h, w = _crop_box(box_key, height, width, scale, ratio)
    sy = size / h.astype(jnp.float32)
    sx = size / w.astype(jnp.float32)
    out = jax.image.scale_and_translate(
        image.astype(jnp.float32), (size, size, channels), spatial_dims=(0, 1),
        scale=jnp.stack([sy, sx]), translation=jnp.stack([-top * sy, -left * sx]),
        method="linear", antialias=True)
    return _flip_one(jnp.clip(out, 0.0, 1.0).astype(image.dtype), flip_key)

  return jax.vmap(one)(images, jax.random.split(key, images.shape[0]))


def center_crop(images: jax.Array, *, size: int) -> jax.Array:
  """The central `size x size` window: `(B, H, W, C)` -> `(B, size, size, C)`.

  For evaluation after `random_resized_crop_flip` training (e.g. 128 of 144).
  """
  _check_images(images)
  _, height, width, _ = images.shape
  if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= min(height, width):
    raise ValueError(f"size must be an int in [1, {min(height, width)}], got {size!r}.")
  top, left = (height - size) // 2, (width - size) // 2
  return images[:, top:top + size, left:left + size, :]


def _identity(images: jax.Array, key: jax.Array) -> jax.Array:
  """No augmentation: returns `images` (checked to be `(B, H, W, C)` float)."""
  del key
  _check_images(images)
  return images


_AUGMENTS = {
    "none": _identity,
    "flip": flip,
    "pad_crop_flip": pad_crop_flip,
    "random_resized_crop_flip": random_resized_crop_flip,
}


def get_augment(name: str, **kwargs) -> Augment:
  """The augmentation `name` with its keyword arguments bound: `(images, key) -> images`.

  Names: 'none', 'flip', 'pad_crop_flip' (kwarg `pad`), 'random_resized_crop_flip'
  (kwargs `size` (required), `scale`, `ratio`).

  Raises:
    ValueError: for an unknown `name` or keyword arguments it does not take.
  """
  if name not in _AUGMENTS:
    raise ValueError(f"Unknown augmentation name={name!r}; known: {sorted(_AUGMENTS)}.")
  fn = _AUGMENTS[name]
  try:
    inspect.signature(fn).bind(None, None, **kwargs)
  except TypeError as e:
    raise ValueError(f"Bad keyword arguments {kwargs} for augmentation name={name!r}: "
                     f"{e}.") from e
  return functools.partial(fn, **kwargs) if kwargs else fn
