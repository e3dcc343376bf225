"""Numeric and pytree helpers shared by every layer: per-example norms, broadcasting a
per-example value against a batch, selecting examples, and telling traced values apart.

"Per example" means over all non-batch dimensions of an array of shape (B, ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The floor of a denominator that can be 0: `v / max(||v||, TINY)` leaves v = 0 at 0.
TINY = 1e-12


def is_concrete(value) -> bool:
  """Whether every leaf of `value` (any pytree) holds a value, i.e. none is a jax tracer.

  Input checks on VALUES (ranges, NaN, labels < K) run only when this is True: under
  `jax.jit` / `vmap` / `grad` the values are unknown and only shapes can be checked.
  """
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def bcast(v: jax.Array, like: jax.Array) -> jax.Array:
  """Per-example values `v` (B,) (or (B, ...) of lower rank) reshaped to broadcast
  against `like` (B, ...): trailing axes of size 1 are appended."""
  v = jnp.asarray(v)
  return jnp.reshape(v, v.shape + (1,) * (jnp.ndim(like) - v.ndim))


def per_example_l2(v: jax.Array, keepdims: bool = False) -> jax.Array:
  """The l2 norm of each example of `v` (B, ...) over all non-batch dimensions.

  Returns (B,) (or (B, 1, ..., 1) with `keepdims`). The gradient at `v = 0` is 0, not NaN.
  """
  sq = jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=1)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  return bcast(norm, v) if keepdims else norm


def where_examples(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Example i of `a` where `mask[i]`, else of `b`; `mask` (B,) bool, `a`, `b` (B, ...)."""
  return jnp.where(bcast(mask, a), a, b)
