"""Helpers shared by the training methods: losses, metrics, the train-mode pass, checks.

The checks and per-example helpers are `adacorr.core`'s (re-exported here for the methods).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from adacorr.core.checks import NORMS, check_fraction, check_nonnegative, check_norm, check_steps
from adacorr.core.tree import TINY, per_example_l2, where_examples

__all__ = [
    "NORMS", "TINY", "accuracy", "check_attack_args", "check_fraction", "check_nonnegative",
    "cross_entropy", "num_perturbed", "per_example_l2", "perturbed_mask", "train_apply",
    "where_examples",
]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def num_perturbed(fraction: float, batch_size: int) -> int:
  """`round(fraction * batch_size)`, halves rounded up: how many examples are perturbed."""
  return int(math.floor(fraction * batch_size + 0.5))


def perturbed_mask(fraction: float, batch_size: int) -> jax.Array:
  """(B,) bool: True for the first `num_perturbed(fraction, B)` examples."""
  return jnp.arange(batch_size) < num_perturbed(fraction, batch_size)


def train_apply(model: nn.Module, params, batch_stats, images, key, **variables):
  """`model.apply` in train mode; returns (logits, new batch_stats)."""
  logits, updates = model.apply(
      {"params": params, "batch_stats": batch_stats, **variables}, images, train=True,
      mutable=["batch_stats"], rngs={"dropout": key})
  return logits, updates.get("batch_stats", batch_stats)


def check_attack_args(norm: str, eps: float, step_size: float, num_steps: int) -> None:
  """The checks of a training attack's arguments: norm, eps >= 0, step_size >= 0, steps >= 1."""
  check_norm(norm)
  check_nonnegative(eps, "eps")
  check_nonnegative(step_size, "step_size")
  check_steps(num_steps, "num_steps", minimum=1)
