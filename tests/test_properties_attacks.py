"""Property test (issue 27): on random small inputs, every l_p attack returns finite images
in [0, 1] inside its ball, for each example's own radius.

Random draws (seeded, so a failure reproduces): images uniform in [0, 1] with a fifth of
the pixels pushed to exactly 0 or 1 (the box's faces), random labels, per-example radii
from 0 (no move allowed) past the box (l_inf up to 1.2, l2 past sqrt(D)), a random key.
Each attack is jitted once with everything traced but its static settings, so the draws
share one compilation per attack (a tiny MLP; few steps).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks

B, H, W, C, K = 4, 6, 6, 3, 5
D = H * W * C
DRAWS = 3


def _mlp():
  rng = np.random.default_rng(0)
  w1 = jnp.asarray(rng.normal(0, 1.0 / np.sqrt(D), (D, 16)), jnp.float32)
  w2 = jnp.asarray(rng.normal(0, 1.0, (16, K)), jnp.float32)
  b1 = jnp.asarray(rng.normal(0, 0.1, (16,)), jnp.float32)
  return lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2 * 3.0


MODEL = _mlp()


def _pgd(norm):
  return lambda x, y, k, eps: attacks.pgd(MODEL, x, y, k, norm=norm, eps=eps,
                                          step_size=0.5 * eps, num_steps=3)


def _apgd(norm, loss):
  return lambda x, y, k, eps: attacks.apgd(MODEL, x, y, k, norm=norm, eps=eps, num_steps=4,
                                           loss=loss)


def _square(norm):
  return lambda x, y, k, eps: attacks.square(MODEL, x, y, k, norm=norm, eps=eps,
                                             num_queries=6)


def _fab(norm):
  return lambda x, y, k, eps: attacks.fab(MODEL, x, y, k, norm=norm, eps=eps, num_steps=3,
                                          num_targets=2, restarts=2)


ATTACKS = {
    "pgd-linf": ("linf", _pgd("linf")), "pgd-l2": ("l2", _pgd("l2")),
    "apgd-linf-ce": ("linf", _apgd("linf", "ce")), "apgd-l2-dlr": ("l2", _apgd("l2", "dlr")),
    "square-linf": ("linf", _square("linf")), "square-l2": ("l2", _square("l2")),
    "fab-linf": ("linf", _fab("linf")), "fab-l2": ("l2", _fab("l2")),
}


@functools.lru_cache(maxsize=None)
def _jitted(name):
  return jax.jit(ATTACKS[name][1])


def _draw(seed: int, norm: str):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (B, H, W, C)).astype(np.float32)
  face = rng.uniform(size=x.shape) < 0.2
  x[face] = rng.integers(0, 2, int(face.sum())).astype(np.float32)
  y = rng.integers(0, K, B).astype(np.int32)
  top = 1.2 if norm == "linf" else 1.2 * np.sqrt(D)
  eps = rng.uniform(0.0, top, B).astype(np.float32)
  eps[0] = 0.0  # no move allowed
  eps[1] = rng.uniform(0.0, 0.1 if norm == "linf" else 1.0)  # a small ball
  return jnp.asarray(x), jnp.asarray(y), jax.random.key(seed), jnp.asarray(eps)


def _norms(delta, norm):
  flat = np.asarray(delta, np.float64).reshape(delta.shape[0], -1)
  return np.abs(flat).max(axis=1) if norm == "linf" else np.sqrt((flat ** 2).sum(axis=1))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_returns_finite_images_in_the_box_inside_each_ball(name):
  norm = ATTACKS[name][0]
  attack = _jitted(name)
  for seed in range(DRAWS):
    x, y, key, eps = _draw(1000 * seed + len(name), norm)
    x_adv = np.asarray(attack(x, y, key, eps))
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32, (name, seed)
    assert np.isfinite(x_adv).all(), (name, seed)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0, (name, seed, x_adv.min(), x_adv.max())
    dist = _norms(x_adv - np.asarray(x), norm)
    limit = np.asarray(eps, np.float64) * (1 + 1e-5) + 1e-6
    assert (dist <= limit).all(), (name, seed, dist, np.asarray(eps))
    assert dist[0] <= 1e-6, (name, seed, dist[0])  # eps = 0: x itself
