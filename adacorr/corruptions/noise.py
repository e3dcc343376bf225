"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise and (extra) speckle_noise.

Per-image functions `fn(image, key, p)` on (H, W, 3) float32 in [0, 1] (see `core`).
They follow `make_cifar_c.py` of `hendrycks/robustness` ('cifar10' tables) and
`imagecorruptions/corruptions.py` ('imagenet' tables), which compute in [0, 1] floats
too, so the parameters need no rescaling. Both references clip to [0, 1]; `core.corrupt`
does that clip. The references round-trip through uint8 (truncating); we keep floats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adacorr.corruptions.base import Corruption


def gaussian_noise(image: jax.Array, key: jax.Array, sigma: float) -> jax.Array:
  """x + N(0, sigma^2), independently per value."""
  return image + sigma * jax.random.normal(key, image.shape, image.dtype)


def shot_noise(image: jax.Array, key: jax.Array, c: float) -> jax.Array:
  """Poisson(x * c) / c: photon noise with `c` photons at full intensity."""
  counts = jax.random.poisson(key, image * c, image.shape)
  return counts.astype(image.dtype) / c


def impulse_noise(image: jax.Array, key: jax.Array, amount: float) -> jax.Array:
  """Salt-and-pepper noise, `skimage.util.random_noise(mode='s&p', amount=amount)`.

  Every value (per channel, independently) is flipped with probability `amount`; a
  flipped value becomes 1 (salt) or 0 (pepper) with probability 1/2 each.
  """
  k_flip, k_salt = jax.random.split(key)
  flipped = jax.random.bernoulli(k_flip, amount, image.shape)
  salted = jax.random.bernoulli(k_salt, 0.5, image.shape)
  return jnp.where(flipped, salted.astype(image.dtype), image)


def speckle_noise(image: jax.Array, key: jax.Array, c: float) -> jax.Array:
  """x + x * N(0, c^2): multiplicative noise."""
  return image + image * (c * jax.random.normal(key, image.shape, image.dtype))


CORRUPTIONS = (
    Corruption("gaussian_noise", gaussian_noise, {
        "cifar10": (0.04, 0.06, 0.08, 0.09, 0.10),
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38)}, random=True),
    Corruption("shot_noise", shot_noise, {
        "cifar10": (500, 250, 100, 75, 50),
        "imagenet": (60, 25, 12, 5, 3)}, random=True),
    Corruption("impulse_noise", impulse_noise, {
        "cifar10": (0.01, 0.02, 0.03, 0.05, 0.07),
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27)}, random=True),
    Corruption("speckle_noise", speckle_noise, {
        "cifar10": (0.06, 0.1, 0.12, 0.16, 0.2),
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6)}, random=True),
)
