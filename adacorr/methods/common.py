"""Helpers shared by the training methods: losses, metrics, the train-mode pass, checks."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

NORMS = ("linf", "l2")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def per_example_l2(x: jax.Array, keepdims: bool = False) -> jax.Array:
  """The l2 norm of each example of `x` over all non-batch dimensions."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)), keepdims=keepdims))


def num_perturbed(fraction: float, batch_size: int) -> int:
  """`round(fraction * batch_size)`, halves rounded up: how many examples are perturbed."""
  return int(math.floor(fraction * batch_size + 0.5))


def perturbed_mask(fraction: float, batch_size: int) -> jax.Array:
  """(B,) bool: True for the first `num_perturbed(fraction, B)` examples."""
  return jnp.arange(batch_size) < num_perturbed(fraction, batch_size)


def check_fraction(fraction: float) -> None:
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction must be in [0, 1], got fraction={fraction}.")


def check_nonnegative(name: str, value: float) -> None:
  if not value >= 0:  # also rejects NaN
    raise ValueError(f"{name} must be >= 0, got {name}={value}.")


def train_apply(model: nn.Module, params, batch_stats, images, key, **variables):
  """`model.apply` in train mode; returns (logits, new batch_stats)."""
  logits, updates = model.apply(
      {"params": params, "batch_stats": batch_stats, **variables}, images, train=True,
      mutable=["batch_stats"], rngs={"dropout": key})
  return logits, updates.get("batch_stats", batch_stats)


def where_examples(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def check_attack_args(norm: str, eps: float, step_size: float, num_steps: int) -> None:
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r} is not one of {NORMS}.")
  check_nonnegative("eps", eps)
  check_nonnegative("step_size", step_size)
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got num_steps={num_steps}.")
