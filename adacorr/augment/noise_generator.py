"""ANT's noise generator and clipping-aware rescaling (Rusak et al. 2020).

* `NoiseGenerator`: a small convolutional net that maps Gaussian noise z to a noise
  pattern delta: convs C -> 20 -> 20 -> 20 -> C with ReLU between and a residual from z
  to the output; weights N(0, 0.01^2), biases 0 (reference `Networks/generators.py`,
  `custom_init`), so at initialisation it outputs (almost exactly) its input N(0, 1)
  noise. `kernel='1x1'`: every conv 1x1, so the pixels of delta are i.i.d. (ANT^1x1).
  `kernel='3x3'`: the second conv is 3x3 VALID and z is drawn at (H+2) x (W+2); the
  residual is z's centre crop, so delta is correlated over 3x3 neighbourhoods (ANT^3x3).
* `clip_aware_rescale(x, delta, eps)`: `clip(x + eta * delta, 0, 1)` with `eta >= 0`
  per example such that the clipped perturbation has l2 norm exactly `eps` (Rauber &
  Bethge 2020, "Fast differentiable clipping-aware normalization and rescaling"; the
  reference's `fix_perturbation_size`). With `s = eta^2` the squared norm is
  `sum_j min(s * delta_j^2, room_j^2)` (`room_j` = distance from x_j to the bound delta_j
  points at): piecewise LINEAR in s, with a breakpoint `s_j = room_j^2 / delta_j^2`
  where pixel j starts to clip. Sorting the breakpoints gives the value at each one
  (cumulative sums), the first breakpoint at which the value reaches eps^2 gives the
  segment, and one division gives s there: exact, vectorised, no iteration.

Images are NHWC float32 in [0, 1].

Checked against the reference code (bethgelab/game-of-noise `Networks/generators.py`,
`evaluation_utils.fix_perturbation_size`): the 1x1 / 3x3 architectures (3x3: z at
(H+2) x (W+2), the second conv 3x3 valid, residual the centre crop), the custom init
(N(0, 0.01) weights, zero biases), a fresh z per call; the rescaling's exact
piecewise-linear solve, its fully clipped result where eps is unreachable (the largest
breakpoint), the final clip to [0, 1] and its gradient through eta. Same; the reference
floors delta^2 at 1e-20 where we treat delta^2 <= 1e-30 as a pixel that never moves
(the same point). Nothing changed.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.checks import check_nonnegative, check_same_shape, check_unit_interval
from adacorr.core.tree import is_concrete

KERNELS = ("1x1", "3x3")
# delta_j^2 at or below this counts as zero (the pixel never moves). Not core.tree.TINY
# (1e-12, a denominator floor): a threshold on squared entries, with its own value.
_ZERO_SQUARED = 1e-30

__all__ = ["KERNELS", "NoiseGenerator", "clip_aware_eta", "clip_aware_rescale",
           "init_generator", "noise_input_shape", "sample_noise"]


class NoiseGenerator(nn.Module):
  """z (B, H+2p, W+2p, C) -> delta (B, H, W, C); p = 0 for '1x1', 1 for '3x3'.

  Attributes:
    kernel: '1x1' (i.i.d. pixels) or '3x3' (3x3 VALID second conv: local correlations).
    features: width of the three hidden convs (20 in the paper).
  """
  kernel: str = "1x1"
  features: int = 20

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    if self.kernel not in KERNELS:
      raise ValueError(f"kernel={self.kernel!r} is not one of {KERNELS}.")
    channels = z.shape[-1]
    conv = lambda f, k, name: nn.Conv(f, (k, k), padding="VALID", name=name,
                                      kernel_init=nn.initializers.normal(stddev=0.01),
                                      bias_init=nn.initializers.zeros)
    middle = 3 if self.kernel == "3x3" else 1
    h = nn.relu(conv(self.features, 1, "conv1")(z))
    h = nn.relu(conv(self.features, middle, "conv2")(h))
    h = nn.relu(conv(self.features, 1, "conv3")(h))
    return conv(channels, 1, "conv4")(h) + _centre_crop(z, (middle - 1) // 2)


def _centre_crop(z: jax.Array, p: int) -> jax.Array:
  return z[:, p:z.shape[1] - p, p:z.shape[2] - p, :] if p else z


def _apply_per_example(params: Any, z: jax.Array) -> jax.Array:
  """The generator with its own parameters per example (every leaf with a leading B
  axis), as batched matmuls: a vmapped `nn.Conv` with per-example kernels becomes a
  grouped convolution, which XLA's data-parallel partitioner rejects."""

  def conv(h, p):
    k = p["kernel"]                                  # (B, kh, kw, in, out)
    kh, kw = k.shape[1:3]
    hh, ww = h.shape[1] - kh + 1, h.shape[2] - kw + 1
    out = sum(jnp.einsum("bhwc,bcd->bhwd", h[:, i:i + hh, j:j + ww], k[:, i, j])
              for i in range(kh) for j in range(kw))
    return out + p["bias"][:, None, None, :]

  h = nn.relu(conv(z, params["conv1"]))
  h = nn.relu(conv(h, params["conv2"]))
  h = nn.relu(conv(h, params["conv3"]))
  p = (params["conv2"]["kernel"].shape[1] - 1) // 2
  return conv(h, params["conv4"]) + _centre_crop(z, p)


def noise_input_shape(generator: NoiseGenerator, shape: Sequence[int]) -> tuple[int, ...]:
  """The shape of z for an output of `shape` (B, H, W, C): (B, H+2, W+2, C) for '3x3'."""
  if generator.kernel not in KERNELS:
    raise ValueError(f"kernel={generator.kernel!r} is not one of {KERNELS}.")
  b, h, w, c = shape
  p = 1 if generator.kernel == "3x3" else 0
  return (b, h + 2 * p, w + 2 * p, c)


def init_generator(generator: NoiseGenerator, key: jax.Array, channels: int) -> Any:
  """The generator's 'params' for images with `channels` channels (any H, W)."""
  z = jnp.zeros(noise_input_shape(generator, (1, 1, 1, channels)), jnp.float32)
  return generator.init(key, z)["params"]


def sample_noise(generator: NoiseGenerator, params: Any, key: jax.Array,
                 shape: Sequence[int], *, per_example: bool = False) -> jax.Array:
  """delta (B, H, W, C) = generator(z), z ~ N(0, 1) drawn per example.

  Example i's z comes from `jax.random.split(key, B)[i]`, so it does not depend on the
  batch size or the other examples. `per_example=True`: every leaf of `params` has a
  leading axis B and example i goes through its own generator `params[i]`.
  """
  zshape = noise_input_shape(generator, shape)
  keys = jax.random.split(key, zshape[0])
  z = jax.vmap(lambda k: jax.random.normal(k, zshape[1:], jnp.float32))(keys)
  if per_example:
    return _apply_per_example(params, z)
  return generator.apply({"params": params}, z)


def _check_inputs(x: jax.Array, delta: jax.Array, eps: Any) -> None:
  """ValueError naming the argument: x not float / NaN / outside [0, 1], delta not of
  x's shape or not finite, eps negative / NaN / not a scalar or (B,) (values when
  concrete)."""
  if jnp.ndim(x) < 1:
    raise ValueError(f"x must have a leading batch axis, got shape {jnp.shape(x)}.")
  check_unit_interval(x, "x")
  check_same_shape(x, delta, ("x", "delta"))
  if is_concrete(delta) and not np.all(np.isfinite(np.asarray(delta))):
    raise ValueError("delta contains NaN or inf values.")
  batch_size = jnp.shape(x)[0]
  shape = jnp.shape(eps)
  if len(shape) > 1 or (len(shape) == 1 and shape[0] != batch_size):
    raise ValueError(f"eps must be a scalar or have shape ({batch_size},), got shape "
                     f"{shape}.")
  check_nonnegative(eps, "eps")


def _solve(x: jax.Array, delta: jax.Array, eps: Any):
  """(eta (B,), reachable (B,) bool, moving (B, N) bool, flat delta (B, N))."""
  _check_inputs(x, delta, eps)
  b = x.shape[0]
  x = x.reshape(b, -1)
  d = delta.reshape(b, -1).astype(x.dtype)
  eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (b,))
  d2 = jnp.square(d)
  moving = d2 > _ZERO_SQUARED
  d2 = jnp.where(moving, d2, 0.0)
  room = jnp.clip(jnp.where(d > 0, 1.0 - x, x), 0.0, None)
  room2 = jnp.where(moving, jnp.square(room), 0.0)
  # s_j = eta^2 at which pixel j reaches its bound (0 for pixels that never move).
  s_break = room2 / jnp.where(moving, d2, 1.0)
  # Find the segment (no gradient): the squared norm at each sorted breakpoint s_k is
  # (sum of room^2 of the pixels clipped by then) + s_k * (sum of d^2 of the others).
  sb = jax.lax.stop_gradient(s_break)
  order = jnp.argsort(sb, axis=-1)
  take = lambda a: jnp.take_along_axis(jax.lax.stop_gradient(a), order, axis=-1)
  s_sorted, room2_s, d2_s = take(s_break), take(room2), take(d2)
  clipped = jnp.cumsum(room2_s, axis=-1)
  free_after = jnp.flip(jnp.cumsum(jnp.flip(d2_s, -1), -1), -1) - d2_s
  y = clipped + s_sorted * jnp.maximum(free_after, 0.0)         # non-decreasing in k
  eps2 = jnp.square(eps)
  n = y.shape[-1]
  k = jnp.sum(y < jax.lax.stop_gradient(eps2)[:, None], axis=-1)  # first k: y_k >= eps^2
  reachable = k < n
  end = jnp.take_along_axis(s_sorted, jnp.minimum(k, n - 1)[:, None], -1)  # segment end
  # Solve in the segment (differentiable): pixels with a breakpoint before its end are
  # clipped (room^2 each), the others move freely (s * d^2 each).
  free = sb >= end
  c = jnp.sum(jnp.where(free, 0.0, room2), axis=-1)
  m = jnp.sum(jnp.where(free, d2, 0.0), axis=-1)
  s = (eps2 - c) / jnp.where(m > 0, m, 1.0)
  s = jnp.where(reachable, jnp.maximum(s, 0.0), s_sorted[:, -1])
  eta = jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, 1.0)), 0.0)  # finite gradient at 0
  return eta, reachable, moving, jnp.where(moving, d, 0.0)


def clip_aware_eta(x: jax.Array, delta: jax.Array, eps: Any) -> jax.Array:
  """(B,) eta >= 0 with ||clip(x + eta * delta, 0, 1) - x||_2 = eps per example.

  Where eps is not reachable (larger than the norm with every moving pixel clipped),
  the smallest eta at which every pixel is clipped. Arguments as `clip_aware_rescale`.
  """
  return _solve(x, delta, eps)[0]


def clip_aware_rescale(x: jax.Array, delta: jax.Array, eps: Any) -> jax.Array:
  """`clip(x + eta * delta, 0, 1)` with the clipped perturbation's l2 norm = eps.

  Args:
    x: (B, H, W, C) images in [0, 1] (any shape with a leading batch axis).
    delta: perturbation directions, the shape of x (any scale; only the direction and
      the relative sizes of its entries matter).
    eps: target l2 norm per example, a float or a (B,) array, >= 0.

  Returns:
    The perturbed images, shape and dtype of x. Where eps is unreachable, the fully
    clipped point (1 where delta > 0, 0 where delta < 0, x where delta = 0).
    Differentiable w.r.t. delta (and x), through eta as well.

  Raises:
    ValueError: naming `x` (not floating point; NaN or outside [0, 1] when concrete),
      `delta` (not the shape of x; NaN or inf when concrete) or `eps` (negative or NaN
      when concrete, or not a scalar / (B,)).
  """
  eta, reachable, moving, d = _solve(x, delta, eps)
  b = x.shape[0]
  flat = x.reshape(b, -1)
  scaled = jnp.clip(flat + eta[:, None] * d, 0.0, 1.0)
  corner = jnp.where(moving, jnp.where(d > 0, 1.0, 0.0), flat)
  out = jnp.where(reachable[:, None], scaled, corner)
  return out.reshape(x.shape).astype(x.dtype)
