"""The corruption registry and `corrupt`, the one entry point.

A corruption is a per-image function `fn(image, key, p) -> image` on a (H, W, 3)
float32 image in [0, 1], where `p` is the entry of its parameter table for one
severity (static Python values) and `key` is that image's own PRNG key. `corrupt`
validates the input, converts 1-channel images to RGB and back, gives every image
its own key, vmaps `fn` over the batch under `jax.jit`, clips to [0, 1] and restores
the dtype. Because each image has its own key, an image's corruption does not depend
on the other images in the batch.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.checks import check_choice, check_images, check_key
from adacorr.core.keys import per_example_keys  # re-exported by adacorr.corruptions
from adacorr.corruptions import blur, digital, noise, weather
from adacorr.corruptions.base import PARAM_TABLES, SEVERITIES, Corruption


def _registry() -> dict[str, Corruption]:
  found: dict[str, Corruption] = {}
  for module in (noise, blur, weather, digital):
    for c in module.CORRUPTIONS:
      assert c.name not in found, c.name
      assert set(c.params) == set(PARAM_TABLES), c.name
      assert all(len(v) == len(SEVERITIES) for v in c.params.values()), c.name
      found[c.name] = c
  return found


BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
# The benchmark's four families (Hendrycks & Dietterich 2019, Fig. 1), 15 corruptions.
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}


@functools.cache
def registry() -> dict[str, Corruption]:
  """Name -> `Corruption`, for every name in `ALL_CORRUPTIONS`."""
  found = _registry()
  assert set(found) == set(ALL_CORRUPTIONS), sorted(set(ALL_CORRUPTIONS) ^ set(found))
  return found


def _check(images, name, severity, params, key) -> None:
  if name not in ALL_CORRUPTIONS:
    raise ValueError(f"Unknown corruption name={name!r}; known: {', '.join(ALL_CORRUPTIONS)}.")
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"severity={severity!r} must be an int in 1..5.")
  check_choice(params, PARAM_TABLES, "params")
  check_images(images, "images", channels=(1, 3), allow_empty=False)
  if key is not None or registry()[name].random:
    check_key(key, reason=f"{name!r} is a random corruption")


@functools.cache
def _batched(name: str, severity: int, params: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  corruption = registry()[name]
  p = corruption.params[params][severity - 1]

  def apply(images, keys):
    gray = images.shape[-1] == 1
    x = images.astype(jnp.float32)
    if gray:
      x = jnp.repeat(x, 3, axis=-1)
    y = jax.vmap(lambda image, k: corruption.fn(image, k, p))(x, keys)
    if gray:  # back to one channel with ITU-R 601 luma weights
      y = y @ jnp.array([0.299, 0.587, 0.114], jnp.float32)[:, None]
    return jnp.clip(y, 0.0, 1.0).astype(images.dtype)

  return jax.jit(apply)


def corrupt(images: jax.Array, name: str, severity: int, key: jax.Array, *,
            params: str = "cifar10") -> jax.Array:
  """Applies corruption `name` at `severity` to every image.

  Args:
    images: (B, H, W, C) floating point in [0, 1], C = 1 or 3.
    name: one of `ALL_CORRUPTIONS`.
    severity: 1 (mildest) .. 5.
    key: one PRNG key (split into one per image) or one key per image, shape (B,);
      may be None for a deterministic corruption (`registry()[name].random` False).
    params: parameter table, 'cifar10' (CIFAR-10-C, for ~32x32 images) or
      'imagenet' (ImageNet-C, for ~224x224 images).

  Returns:
    (B, H, W, C) corrupted images in [0, 1], same dtype as `images`.

  Raises:
    ValueError: for an unknown `name` or `params`, a `severity` not in 1..5,
      `images` of the wrong rank, channels or dtype, an empty batch, NaN or values
      outside [0, 1] (when concrete), or key=None for a random corruption.
  """
  _check(images, name, severity, params, key)
  if key is None:  # a deterministic corruption: the keys are never read
    key = jax.random.key(0)
  keys = per_example_keys(key, images.shape[0])
  return _batched(name, int(severity), params)(images, keys)


def as_numpy_uint8(images: jax.Array) -> np.ndarray:
  """[0, 1] floats -> uint8 (rounding), e.g. for storing a -C dataset."""
  return np.asarray(jnp.round(jnp.clip(images, 0, 1) * 255)).astype(np.uint8)
