"""LPIPS distances over any network's features (Laidlaw et al. 2021, Zhang et al. 2018).

A `features_fn(x) -> [f_1, ..., f_L]` maps images (B, H, W, C) in [0, 1] to a list of
NHWC feature maps f_l of shape (B, H_l, W_l, C_l). The LPIPS embedding phi(x) (B, D)
unit-normalises each map over channels at every position (`f / (||f||_C + 1e-10)`),
divides it by sqrt(H_l W_l), flattens and concatenates; the distance is
`d(x1, x2) = ||phi(x1) - phi(x2)||_2` per example (the square root of Zhang et al.'s
LPIPS without learned weights). With Zhang et al.'s learned non-negative channel
weights w_l, each normalised map is also scaled by sqrt(w_l), so d^2 equals their
LPIPS value (spatial average of the w-weighted squared differences, summed over layers).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core import checks

Array = jax.Array
FeaturesFn = Callable[[Array], Sequence[Array]]

EPS = 1e-10  # as the reference implementations: f / (||f|| + 1e-10)


def check_features(features: Sequence[Array], name: str = "features") -> None:
  """ValueError unless `features` is a non-empty list of (B, H, W, C) maps of one batch."""
  if isinstance(features, (jax.Array,)) or not isinstance(features, (list, tuple)):
    raise ValueError(f"{name} must be a list of NHWC feature maps, got {type(features)}.")
  if not features:
    raise ValueError(f"{name} must contain at least one feature map.")
  batch = jnp.shape(features[0])[0] if jnp.ndim(features[0]) else None
  for i, f in enumerate(features):
    if jnp.ndim(f) != 4:
      raise ValueError(f"{name}[{i}] must be a rank-4 (B, H, W, C) map, got shape "
                       f"{jnp.shape(f)}.")
    if jnp.shape(f)[0] != batch:
      raise ValueError(f"{name}[{i}] has batch size {jnp.shape(f)[0]}, {name}[0] has {batch}.")


def normalize_features(features: Sequence[Array],
                       channel_weights: Sequence[Array] | None = None) -> Array:
  """The LPIPS embedding phi (B, D) of a list of NHWC feature maps (float32).

  Args:
    features: [f_l] with f_l of shape (B, H_l, W_l, C_l).
    channel_weights: optional [w_l], w_l of shape (C_l,), non-negative (Zhang et al.'s
      learned linear layers); each normalised map is multiplied by sqrt(w_l).
  Returns:
    (B, sum_l H_l W_l C_l) embedding; ||phi(x1) - phi(x2)||_2 is the LPIPS distance.
  """
  check_features(features)
  if channel_weights is not None and len(channel_weights) != len(features):
    raise ValueError(f"channel_weights has {len(channel_weights)} entries for "
                     f"{len(features)} feature maps.")
  parts = []
  for i, f in enumerate(features):
    f = f.astype(jnp.float32)
    b, h, w, c = f.shape
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    # sqrt with a zero (not NaN) derivative where a position's channels are all 0 (dead
    # ReLUs): the plain sqrt's forward-mode derivative there is 0/0.
    norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    f = f / ((norm + EPS) * jnp.sqrt(float(h * w)))
    if channel_weights is not None:
      weights = channel_weights[i]
      if not isinstance(weights, jax.core.Tracer) and np.any(np.asarray(weights) < 0):
        raise ValueError(f"channel_weights[{i}] must be non-negative (Zhang et al.'s learned "
                         "weights are clamped to >= 0).")
      wl = jnp.asarray(weights, jnp.float32).reshape(-1)
      if wl.shape[0] != c:
        raise ValueError(f"channel_weights[{i}] has {wl.shape[0]} entries, the map has "
                         f"{c} channels.")
      f = f * jnp.sqrt(jnp.maximum(wl, 0.0))
    parts.append(f.reshape(b, -1))
  return jnp.concatenate(parts, axis=1)


def embedding_distance(phi1: Array, phi2: Array) -> Array:
  """Per-example l2 distance (B,) between embeddings (B, D); gradient 0 (not NaN) at 0, NaN
  (not 0) for NaN embeddings."""
  sq = jnp.sum(jnp.square(phi1 - phi2), axis=-1)
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.where(sq > 0, jnp.sqrt(safe), sq)


def lpips_embedding(features_fn: FeaturesFn, x: Array) -> Array:
  """phi(x) (B, D) for images `x` (B, H, W, C) in [0, 1]."""
  return normalize_features(features_fn(x))


def lpips_distance(features_fn: FeaturesFn, x1: Array, x2: Array) -> Array:
  """Per-example LPIPS distance (B,) between image batches `x1`, `x2` (B, H, W, C) in [0, 1].

  Raises:
    ValueError: if the batches are not rank 4, differ in shape, or (when concrete) lie
      outside [0, 1].
  """
  checks.check_images(x1, "x1")
  checks.check_images(x2, "x2")
  checks.check_same_shape(x1, x2, ("x1", "x2"))
  return embedding_distance(lpips_embedding(features_fn, x1),
                            lpips_embedding(features_fn, x2))
