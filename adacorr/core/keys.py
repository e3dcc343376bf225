"""PRNG keys per example: the one mechanism behind "an example's result depends only on
its own inputs and key" in the attacks, the corruptions and the methods."""

import jax
import jax.numpy as jnp


def per_example_keys(key, batch_size: int) -> jax.Array:
  """Per-example keys (B,) typed or (B, 2) raw from one key or per-example keys.

  One key (typed shape () or raw shape (2,)) is split into `batch_size` keys;
  per-example keys (typed (B,) or raw (B, 2)) are returned unchanged.

  Raises:
    ValueError: if `key` has another shape.
  """
  shape = jnp.shape(key)
  typed = jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)
  single = () if typed else (2,)
  if shape == single:
    return jax.random.split(key, batch_size)
  if shape == (batch_size,) + single:
    return key
  raise ValueError(
      f"key must be one key (shape {single}) or one per example (shape "
      f"{(batch_size,) + single}); got shape {shape}.")
