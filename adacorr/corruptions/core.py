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

import difflib
import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.checks import check_choice, check_images, check_key
from adacorr.core import checks
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


# Names used elsewhere for the same corruptions (tfds `cifar10_corrupted`, ImageNet-C).
ALIASES = {"frosted_glass_blur": "glass_blur", "elastic": "elastic_transform",
           "jpeg": "jpeg_compression", "pixelation": "pixelate", "saturation": "saturate"}


def check_name(name) -> str:
  """`name` if it is one of `ALL_CORRUPTIONS`; else ValueError suggesting the right
  ones (for tfds / ImageNet-C spellings such as 'frosted_glass_blur', other cases, parts
  of a name such as 'gaussian', typos)."""
  if isinstance(name, str) and name in ALL_CORRUPTIONS:
    return name
  hint = ""
  if isinstance(name, str):
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in ALL_CORRUPTIONS or key in ALIASES:
      guesses = [ALIASES.get(key, key)]
    else:
      guesses = ([n for n in ALL_CORRUPTIONS if key and key in n]
                 or difflib.get_close_matches(key, ALL_CORRUPTIONS, n=2))
    if guesses:
      hint = f" Did you mean {' or '.join(map(repr, guesses[:3]))}?"
  raise ValueError(f"Unknown corruption name={name!r}.{hint} Known: "
                   f"{', '.join(ALL_CORRUPTIONS)}.")


def check_severity(severity) -> int:
  """`severity` as a Python int; ValueError unless it is a static integer in 1..5.

  The severity picks a row of the parameter table (Python values that shape the
  computation: kernel sizes, loop counts), so it cannot be traced: under `jax.jit` pass it
  as a static argument or loop over `SEVERITIES` in Python.
  """
  if isinstance(severity, jax.core.Tracer):
    raise ValueError(
        "severity is a traced value; it must be a static Python int in 1..5, since it "
        "selects the corruption's parameters (kernel sizes, loop counts). Under jax.jit "
        "mark it static (jax.jit(f, static_argnums=...) / static_argnames=...) or loop "
        "over adacorr.corruptions.SEVERITIES in Python.")
  if isinstance(severity, (bool, np.bool_)) or isinstance(severity, (str, bytes)) or not (
      isinstance(severity, (int, np.integer)) or (
          hasattr(severity, "dtype") and jnp.ndim(severity) == 0
          and jnp.issubdtype(jnp.result_type(severity), jnp.integer))):
    hint = (f" (int({severity!r}) if it came from text)"
            if isinstance(severity, (str, bytes)) else "")
    raise ValueError(f"severity={severity!r} must be an int in 1..5{hint}, got "
                     f"{type(severity).__name__}.")
  value = int(severity)
  if value not in SEVERITIES:
    raise ValueError(f"severity={severity!r} must be an int in 1..5 (1 the mildest, 5 the "
                     f"harshest, as in the -C benchmarks).")
  return value


# The sizes the two parameter tables were made for (CIFAR-10-C, ImageNet-C), and how far
# (a factor on the image side) an image may be from them before `corrupt` warns.
CALIBRATED_SIDE = {"cifar10": 32, "imagenet": 224}
CALIBRATION_FACTOR = 4


def warn_if_uncalibrated(image_shape, params: str) -> bool:
  """`warnings.warn` (and True) when images of `image_shape` (B, H, W, C) are more than
  `CALIBRATION_FACTOR` (4) times smaller (imagenet) or larger (cifar10) on a side than
  the table's images: legal, but the table's pixel-distance parameters (blur radii,
  displacements, zooms) then corrupt far more (or less) than the benchmark did.

  'imagenet' (ImageNet-C, 224 x 224) on images whose larger side is < 56 (e.g. 7 x 7,
  28 x 28, 32 x 32); 'cifar10' (CIFAR-10-C, 32 x 32) on images whose smaller side is
  > 128 (e.g. 224 x 224). Static (shapes only): free under jit.
  """
  side = CALIBRATED_SIDE[params]
  height, width = image_shape[1:3]
  if params == "imagenet" and max(height, width) * CALIBRATION_FACTOR < side:
    other, advice = "smaller", "params='cifar10' (CIFAR-10-C, made for 32 x 32 images)"
  elif params == "cifar10" and min(height, width) > side * CALIBRATION_FACTOR:
    other, advice = "larger", "params='imagenet' (ImageNet-C, made for 224 x 224 images)"
  else:
    return False
  warnings.warn(
      f"corrupt: params={params!r} is the parameter table calibrated for {side} x {side} "
      f"images, but these images are {height} x {width} (more than {CALIBRATION_FACTOR}x "
      f"{other} on a side): its pixel-distance parameters (blur radii, displacements, "
      f"zoom crops) give corruptions of another strength than the benchmark's severities. "
      f"Use {advice} unless this is intended.", UserWarning,
      stacklevel=checks.caller_stacklevel())
  return True


def _check(images, name, severity, params, key) -> int:
  """The checks of `corrupt`; returns the severity as an int."""
  check_name(name)
  severity = check_severity(severity)
  check_choice(params, PARAM_TABLES, "params")
  shape = jnp.shape(images) if hasattr(images, "shape") else None
  if shape is not None and len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
    raise ValueError(
        f"images has shape {tuple(shape)}, which looks like NCHW (channels second); "
        f"corrupt takes NHWC images (B, H, W, C) with C = 1 or 3: pass "
        f"images.transpose(0, 2, 3, 1).")
  check_images(images, "images", channels=(1, 3), allow_empty=False)
  if key is not None or registry()[name].random:
    check_key(key, reason=f"{name!r} is a random corruption")
  warn_if_uncalibrated(jnp.shape(images), params)
  return severity


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
    severity: 1 (mildest) .. 5, a static Python int (it selects the parameters, so it
      cannot be traced: under `jax.jit` make it a static argument).
    key: one PRNG key (split into one per image) or one key per image, shape (B,);
      may be None for a deterministic corruption (`registry()[name].random` False).
    params: parameter table, 'cifar10' (CIFAR-10-C, for ~32x32 images) or
      'imagenet' (ImageNet-C, for ~224x224 images).

  Returns:
    (B, H, W, C) corrupted images in [0, 1], same dtype as `images`. Every corruption
    gives finite values for any finite input in [0, 1], down to 1 x 1 images.

  Raises:
    ValueError: for an unknown `name` (with a suggestion) or `params`, a `severity` that
      is not an int in 1..5 (a string, a float, a traced value), `images` of the wrong
      rank, channels (NCHW is named) or dtype, an empty batch, NaN or values outside
      [0, 1] (when concrete), a key of the wrong shape, or key=None for a random
      corruption.
  Warns:
    UserWarning: when the table was calibrated for images more than 4x larger
      ('imagenet' on images under 56 px) or smaller ('cifar10' on images over 128 px)
      on a side (`warn_if_uncalibrated`).
  """
  if isinstance(images, (list, tuple)):
    images = np.asarray(images, np.float32)
  severity = _check(images, name, severity, params, key)
  if key is None:  # a deterministic corruption: the keys are never read
    key = jax.random.key(0)
  keys = per_example_keys(key, images.shape[0])
  return _batched(name, severity, params)(images, keys)


def as_numpy_uint8(images: jax.Array) -> np.ndarray:
  """[0, 1] floats -> uint8 (rounding), e.g. for storing a -C dataset."""
  return np.asarray(jnp.round(jnp.clip(images, 0, 1) * 255)).astype(np.uint8)
