"""Noise robustness eps* (Rusak et al. 2020, Eq. 4): the median over a test set of the
smallest l2 norm of noise along a random direction that changes the prediction.

Per example a noise direction delta (Gaussian by default, or given, e.g. samples of a
trained noise generator for eps*_AN); the perturbed image at norm r is
`clip_aware_rescale(x, delta, r)`, the point `clip(x + eta * delta, 0, 1)` whose clipped
perturbation has l2 norm exactly r. A line search over r in [0, max_norm]: a coarse
geometric grid `max_norm * 2^-k` (k = num_grid - 1, ..., 0) finds the first misclassified
grid point, then `num_steps` bisection steps between it and the previous (correctly
classified) one. (The reference `zero_accuracy_perturbation` searches the unclipped
scale eta on a 1.8^b grid and bisects 40 times; searching the clipped norm itself makes
max_norm and the returned values l2 norms of the actual perturbations.)

The norm returned is that of a misclassified point (an upper bound within the final
bisection interval); 0 where the clean image is already misclassified; inf where no
norm up to max_norm (or the fully clipped point, if smaller) flips the label. In the
median an inf counts as +inf (the paper's footnote 5).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.augment.noise_generator import clip_aware_rescale
from adacorr.core.checks import (
    check_images, check_key, check_labels, check_logits_fn, check_nonnegative, check_positive,
    check_same_shape, check_steps)

__all__ = ["eps_star", "minimal_noise_norm", "noise_robustness_eps_star"]


def _check(logits_fn, x, y, key, noise, max_norm, num_steps: int, num_grid: int) -> None:
  check_positive(max_norm, "max_norm")
  check_nonnegative(max_norm, "max_norm", finite=True)
  check_steps(num_steps, "num_steps")
  check_steps(num_grid, "num_grid", minimum=1)
  check_images(x)
  num_classes = check_logits_fn(logits_fn, x)
  check_labels(y, jnp.shape(x)[0], num_classes)
  if noise is None:
    check_key(key, reason="the Gaussian noise directions are drawn from it; or pass noise")
  else:
    check_same_shape(x, noise, ("x", "noise"))


def minimal_noise_norm(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                       y: jax.Array, key: jax.Array | None = None, *, max_norm: float,
                       num_steps: int = 20, num_grid: int = 12,
                       noise: jax.Array | None = None) -> jax.Array:
  """(B,) smallest l2 norm along each example's noise direction that flips its label.

  Args:
    logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, K), e.g. the model in eval mode.
    x: (B, H, W, C) images in [0, 1]; y: (B,) int labels.
    key: PRNG key of the Gaussian directions (example i: `split(key, B)[i]`); unused
      when `noise` is given.
    max_norm: the largest l2 norm searched (> 0).
    num_steps: bisection steps after the grid (the interval shrinks by 2^num_steps).
    num_grid: coarse grid points `max_norm * 2^-k`, k < num_grid.
    noise: optional (B, H, W, C) directions instead of Gaussian ones.

  Returns:
    float32 (B,): 0 where already misclassified, inf where nothing up to max_norm flips
    the label, else the norm of a misclassified point at most 2^-num_steps times the
    grid interval above the boundary. Jittable (max_norm, num_steps, num_grid static).

  Raises:
    ValueError: naming `max_norm` (<= 0 or NaN), `num_steps`, `num_grid`, `x` (not a
      float NHWC batch; NaN or outside [0, 1] when concrete), `logits_fn` (not (B, K)),
      `y` (not int (B,); outside [0, K) when concrete), `key` (None without `noise`)
      or `noise` (not the shape of x).
  """
  _check(logits_fn, x, y, key, noise, max_norm, num_steps, num_grid)
  b = x.shape[0]
  if noise is None:
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(
        jax.random.split(key, b))

  def wrong(r):
    return jnp.argmax(logits_fn(clip_aware_rescale(x, noise, r)), -1) != y

  zeros = jnp.zeros((b,), jnp.float32)
  wrong0 = wrong(zeros)
  grid = float(max_norm) * 2.0 ** jnp.arange(-(num_grid - 1), 1, dtype=jnp.float32)

  def scan_grid(carry, r):
    found, lo, hi = carry
    w = wrong(jnp.full((b,), r))
    hi = jnp.where(w & ~found, r, hi)
    lo = jnp.where(~w & ~found, r, lo)
    return (found | w, lo, hi), None

  (found, lo, hi), _ = jax.lax.scan(scan_grid, (wrong0, zeros, zeros), grid)

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    w = wrong(mid)
    return jnp.where(w, lo, mid), jnp.where(w, mid, hi)

  lo, hi = jax.lax.fori_loop(0, num_steps, bisect, (lo, hi))
  actual = jnp.sqrt(jnp.sum(jnp.square(clip_aware_rescale(x, noise, hi) - x),
                            axis=tuple(range(1, x.ndim))))
  return jnp.where(wrong0, 0.0, jnp.where(found, actual, jnp.inf))


def eps_star(norms) -> float:
  """The median of per-example minimal norms, inf counted as +inf (paper's footnote 5)."""
  norms = np.asarray(norms, np.float64).reshape(-1)
  if norms.size == 0:
    raise ValueError("norms must not be empty.")
  if np.isnan(norms).any():
    raise ValueError("norms must not contain NaN.")
  if (norms < 0).any():
    raise ValueError(f"norms must be >= 0 (l2 norms, inf where nothing flipped the label), "
                     f"got a minimum of {norms.min():.4g}.")
  return float(np.median(norms))


def noise_robustness_eps_star(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                              y: jax.Array, key: jax.Array | None = None, *,
                              max_norm: float, num_steps: int = 20, num_grid: int = 12,
                              noise: jax.Array | None = None) -> float:
  """eps* of one batch: `eps_star(minimal_noise_norm(...))`. For a whole test set,
  concatenate the batches' `minimal_noise_norm` and take `eps_star` of all of them."""
  return eps_star(jax.device_get(minimal_noise_norm(
      logits_fn, x, y, key, max_norm=max_norm, num_steps=num_steps, num_grid=num_grid,
      noise=noise)))
