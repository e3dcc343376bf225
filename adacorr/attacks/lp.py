"""l_p-ball attacks: building blocks, PGD, FGSM and FGM.

Conventions: images `x` are NHWC float32 in [0, 1] of shape (B, H, W, C); labels `y` are
int (B,); `logits_fn(x) -> (B, K)` logits (the model in evaluation mode, so that one
example's logits do not depend on the others). Norms of perturbations are per example,
over all non-batch dimensions. Every attack returns `x_adv` of the shape of `x`, inside
the eps-ball around `x` and inside [0, 1].

All functions are pure and jittable; norms, losses, step counts and flags are static
Python values (`functools.partial` them before `jax.jit`), eps and step sizes may be
traced. The checks are `adacorr.core.checks`: values (negative or NaN eps, x outside
[0, 1], labels outside [0, K)) are checked only when the argument is concrete. A radius
may be text ('8/255', '0.03'; parsed by `adacorr.core.radius`, as in the evaluators).

Keys: an attack that draws random numbers takes `key`, either ONE key or one key per
example (typed keys of shape (B,), raw uint32 keys of shape (B, 2)). With one key, the
per-example keys are `jax.random.split(key, B)`. With per-example keys, example `i`'s
result depends only on `x[i]`, `y[i]`, `key[i]` (every random draw is made per example
under `vmap`), so an example gives the same result alone or in any batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adacorr.attacks import ascent
from adacorr.core.checks import (
    check_bool, check_images, check_key, check_labels, check_logits_fn,
    check_nonnegative, check_norm, check_steps, warn_if_255_scale,
    warn_if_l2_allows_every_image)
from adacorr.core.keys import per_example_keys  # re-exported by adacorr.attacks
from adacorr.core.radius import as_radius
from adacorr.core.tree import TINY, bcast, per_example_l2

Array = jax.Array
LogitsFn = Callable[[Array], Array]


def traced_logits_fn(apply_fn: Callable, variables) -> jax.tree_util.Partial:
  """`x -> apply_fn(variables, x)` as a pytree whose leaves are `variables`.

  The jitted attack wrappers (`component_attacks`, `evaluation.lp_robustness`) take
  `logits_fn` as a traced pytree (`as_pytree`): built with this, the variables are
  traced arguments, not constants baked into the program, so every model of one
  architecture shares one compilation per attack and batch shape, in a process and, with
  JAX's persistent compilation cache (`jax_compilation_cache_dir`), across processes.
  `apply_fn` (e.g. `jax.jit(lambda v, x: model.apply(v, x, train=False))`) is static:
  pass the same object to share the in-process cache.
  """
  return jax.tree_util.Partial(apply_fn, variables)


def as_pytree(logits_fn: LogitsFn) -> jax.tree_util.Partial:
  """`logits_fn` as an argument a jitted function can take: a `traced_logits_fn` (or any
  `jax.tree_util.Partial`) as it is; any other callable wrapped in a `Partial` without
  arguments, i.e. static (compared by identity: the same object reuses its compilation,
  and what it closes over is a constant of the program)."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    return logits_fn
  return jax.tree_util.Partial(logits_fn)

LOSSES = ("ce", "margin", "dlr")


# --------------------------------------------------------------------------- validation


def check_loss(loss: str, allowed=LOSSES, name: str = "loss") -> None:
  """ValueError unless `loss` is one of `allowed` ('ce', 'margin', 'dlr')."""
  if isinstance(loss, (list, dict, set)) or loss not in tuple(allowed):
    raise ValueError(f"{name}={loss!r} is not a supported loss; use one of {tuple(allowed)}.")


def check_attack_inputs(logits_fn: LogitsFn, x, y) -> int:
  """Checks an attack's images, classifier and labels; returns the number of classes K.

  `x`: a non-empty rank-4 batch of float images in [0, 1] (values when concrete);
  `logits_fn(x)`: float logits of shape (B, K) (traced with `jax.eval_shape`, no
  computation; an exception of the model is re-raised naming x's shape); `y`: int (B,)
  in [0, K) (values when concrete).
  """
  check_images(x, allow_empty=False)
  num_classes = check_logits_fn(logits_fn, x)
  check_labels(y, jnp.shape(x)[0], num_classes)
  return num_classes


def check_radius(eps, norm: str, name: str = "eps", *, image_shape=None):
  """`eps` with text parsed ('8/255' -> 8/255, `core.radius.as_radius`); ValueError for a
  missing, non-numeric, negative, NaN or infinite radius (values when concrete), or one
  that is neither a scalar nor one radius per example (B,) (`image_shape` (B, H, W, C)
  given); a warning for an l_inf radius > 1 (a 0-255 value such as 8 instead of 8/255)
  and for an l2 radius >= sqrt(H * W * C) (every image in [0, 1] is in the ball).

  eps = 0 is allowed (training code may call an attack with it); evaluation uses the
  stricter `core.checks.check_radius_for_evaluation` (eps > 0, l_inf eps <= 1, errors).
  """
  eps = as_radius(eps, name)
  check_nonnegative(eps, name, finite=True)
  if image_shape is not None and jnp.ndim(eps) and (
      jnp.ndim(eps) != 1 or jnp.shape(eps)[0] != tuple(image_shape)[0]):
    raise ValueError(f"{name} must be one radius or one per example, shape () or "
                     f"({tuple(image_shape)[0]},), got shape {jnp.shape(eps)}.")
  warn_if_255_scale(eps, name, norm=norm)
  warn_if_l2_allows_every_image(eps, norm, image_shape, name)
  return eps


def check_step_size(step_size, x, name: str = "step_size"):
  """`step_size` checked (a finite number >= 0, or one per example (B,)), as an array
  broadcasting against `x` (B, H, W, C)."""
  check_nonnegative(step_size, name, finite=True)
  if jnp.ndim(step_size) == 0:
    return step_size
  if jnp.shape(step_size) != (jnp.shape(x)[0],):
    raise ValueError(f"{name} must be one number or one per example, shape () or "
                     f"({jnp.shape(x)[0]},), got shape {jnp.shape(step_size)}.")
  return bcast(jnp.asarray(step_size), x)


def check_restarts(restarts) -> None:
  if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
    raise ValueError(f"restarts={restarts!r} must be a Python int >= 1.")


def check_attack_args(logits_fn: LogitsFn, x, y, *, norm: str, eps, loss: str | None = None,
                      losses=LOSSES) -> int:
  """The checks of an l_p attack's arguments (see `check_attack_inputs`, `check_radius`);
  returns the number of classes K. (`eps` is checked, not parsed: the attacks take
  `as_radius(eps)` first.)"""
  check_images(x, allow_empty=False)
  check_norm(norm)
  check_radius(eps, norm, image_shape=jnp.shape(x))
  if loss is not None:
    check_loss(loss, losses)
  return check_attack_inputs(logits_fn, x, y)


# --------------------------------------------------------------------------- norms


l2_norm = per_example_l2  # (B,) per-example l2 norm; 0 gradient at 0


def linf_norm(v: Array) -> Array:
  """Per-example l_inf norm (B,) of `v` (B, ...)."""
  return jnp.max(jnp.abs(v).reshape(v.shape[0], -1), axis=1)


def l2_normalize(v: Array) -> Array:
  """`v / ||v||_2` per example; examples with `v == 0` stay 0."""
  return ascent.l2_direction(v)


def steepest_direction(g: Array, norm: str) -> Array:
  """The unit-norm ascent direction for gradient `g`: sign(g) (linf) or g/||g||_2 (l2)."""
  check_norm(norm)
  return ascent.DIRECTIONS[norm](g)


# --------------------------------------------------------------------------- projections


def project_linf(delta: Array, eps) -> Array:
  """Projects perturbations `delta` (B, ...) onto the l_inf ball of radius `eps`."""
  return jnp.clip(delta, -eps, eps)


def project_l2(delta: Array, eps) -> Array:
  """Projects perturbations `delta` (B, ...) onto the l2 ball of radius `eps` (per example)."""
  n = l2_norm(delta)
  scale = jnp.minimum(1.0, eps / jnp.maximum(n, TINY))
  return delta * bcast(scale, delta)


def project(x_adv: Array, x: Array, *, norm: str, eps) -> Array:
  """Maps `x_adv` into {x + delta: ||delta||_p <= eps} intersected with [0, 1].

  Projects `x_adv - x` onto the eps-ball, then clips `x + delta` to [0, 1]. Clipping
  only shrinks each |delta_i| (x is in [0, 1]), so the result stays in the ball. For
  l_inf this is the exact Euclidean projection onto the intersection; for l2 it is the
  usual projection-then-clip (feasible, not always the exact nearest point).

  Args:
    x_adv: (B, H, W, C) candidate points.
    x: (B, H, W, C) clean images in [0, 1].
    norm: 'linf' or 'l2'.
    eps: radius (scalar or (B,)).
  Returns:
    (B, H, W, C) points in the ball and in [0, 1].
  """
  check_norm(norm)
  eps = as_radius(eps)
  delta = x_adv - x
  if jnp.ndim(eps) == 1:
    eps_b = bcast(jnp.asarray(eps), delta)
  else:
    eps_b = eps
  if norm == "linf":
    delta = project_linf(delta, eps_b)
  else:
    delta = project_l2(delta, eps)
  return jnp.clip(x + delta, 0.0, 1.0)


# --------------------------------------------------------------------------- random init


def _random_delta_one(key: Array, shape, norm: str, eps) -> Array:
  """One example's random perturbation, uniform in the eps-ball."""
  if norm == "linf":
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0) * eps
  k_dir, k_rad = jax.random.split(key)
  d = int(np.prod(shape))
  direction = jax.random.normal(k_dir, shape)
  direction = direction / jnp.maximum(jnp.sqrt(jnp.sum(direction ** 2)), TINY)
  radius = eps * jax.random.uniform(k_rad, ()) ** (1.0 / d)
  return direction * radius


def random_init(key, x: Array, *, norm: str, eps) -> Array:
  """A random start `clip(x + delta, 0, 1)` with `delta` uniform in the eps-ball.

  l_inf: delta ~ U(-eps, eps) per pixel. l2: delta uniform in the l2 ball, i.e. a uniform
  direction (normalised Gaussian) times radius `eps * U(0,1) ** (1/d)`, d the number of
  elements of one example (for images most of the mass is near the sphere).
  Drawn per example under `vmap` from per-example keys, so example i depends only on
  `key[i]`.

  Args:
    key: one key or per-example keys (see module docstring).
    x: (B, H, W, C) clean images in [0, 1].
    norm: 'linf' or 'l2'.
    eps: radius (a number, '8/255', a scalar array or one radius per example (B,)).
  Returns:
    (B, H, W, C) starting points in the ball and in [0, 1].
  """
  check_norm(norm)
  eps = as_radius(eps)
  check_nonnegative(eps, "eps")
  check_key(key, reason="random_init draws a random start")
  keys = per_example_keys(key, x.shape[0])
  if jnp.ndim(eps) == 1:  # one radius per example
    if jnp.shape(eps)[0] != x.shape[0]:
      raise ValueError(f"eps must be one radius or one per example, shape () or "
                       f"({x.shape[0]},), got shape {jnp.shape(eps)}.")
    delta = jax.vmap(lambda k, e: _random_delta_one(k, x.shape[1:], norm, e))(
        keys, jnp.asarray(eps))
  else:
    delta = jax.vmap(lambda k: _random_delta_one(k, x.shape[1:], norm, eps))(keys)
  return jnp.clip(x + delta.astype(x.dtype), 0.0, 1.0)


# --------------------------------------------------------------------------- losses


def _max_other(logits: Array, y: Array) -> Array:
  onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def loss_per_example(logits: Array, y: Array, *, loss: str) -> Array:
  """Per-example attack loss (B,); larger means more adversarial for label `y`.

  'ce': softmax cross-entropy. 'margin': max_{i != y} z_i - z_y (> 0 iff misclassified).
  'dlr': -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), z_pi sorted decreasingly
  (Croce & Hein 2020; needs K >= 3).

  Args:
    logits: (B, K) float.
    y: (B,) int labels in [0, K).
    loss: 'ce', 'margin' or 'dlr'.
  """
  check_loss(loss)
  logits = logits.astype(jnp.float32)
  if loss == "ce":
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  if loss == "margin":
    return _max_other(logits, y) - z_y
  if logits.shape[-1] < 3:
    raise ValueError(f"loss='dlr' needs at least 3 classes; logits have {logits.shape[-1]}.")
  top3 = jax.lax.top_k(logits, 3)[0]
  return -(z_y - _max_other(logits, y)) / (top3[:, 0] - top3[:, 2] + 1e-12)


def success_rank(logits: Array, y: Array, obj: Array, *, targeted: bool = False):
  """The per-example rank of an iterate for success-aware tracking (`ascent.greater`):
  `(success, score)`, success 1.0 where the attack succeeded (untargeted: the prediction
  is not `y`; targeted: it is the target `y`), score the margin of that success
  (untargeted: max_{i != y} z_i - z_y; targeted: z_y - max_{i != y} z_i; > 0) where it
  succeeded, else `obj` (the attack's objective). Kept per example, a misclassified
  iterate beats every correctly classified one and, among misclassified ones, the largest
  margin wins; with no success the highest objective wins (AutoAttack keeps any
  misclassified iterate; the highest-loss point can be classified correctly while an
  earlier iterate was not).
  """
  logits = logits.astype(jnp.float32)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  margin = _max_other(logits, y) - z_y
  if targeted:
    margin = -margin
  success = margin > 0
  return success.astype(jnp.float32), jnp.where(success, margin, obj)


def objective_and_grad(logits_fn: LogitsFn, x_adv: Array, y: Array, *, loss: str,
                       targeted: bool = False):
  """Per-example objective (B,) to maximise (the loss, or minus it if `targeted`) and
  the gradient of its sum w.r.t. `x_adv`."""
  sign = -1.0 if targeted else 1.0

  def total(xa):
    obj = sign * loss_per_example(logits_fn(xa), y, loss=loss)
    return jnp.sum(obj), obj

  (_, obj), g = jax.value_and_grad(total, has_aux=True)(x_adv)
  return obj, g


# --------------------------------------------------------------------------- PGD


def pgd_step(logits_fn: LogitsFn, x_adv: Array, x: Array, y: Array, *, norm: str, eps,
             step_size, loss: str = "ce", targeted: bool = False):
  """One projected steepest-ascent step.

  `x_next = project(x_adv + step_size * dir(grad), x)`, dir = sign (linf) or the
  per-example l2-normalised gradient (l2). With `targeted`, `y` are target labels and
  the step descends the loss.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x_adv: (B, H, W, C) current iterate.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) labels (targets if `targeted`).
  Returns:
    `(x_next, loss_at_x_adv)`: (B, H, W, C) next iterate and the (B,) loss at `x_adv`.
  """
  eps = as_radius(eps)
  obj, g = objective_and_grad(logits_fn, x_adv, y, loss=loss, targeted=targeted)
  x_next = project(x_adv + step_size * steepest_direction(g, norm), x, norm=norm, eps=eps)
  return x_next, (-obj if targeted else obj)


def _objective(logits_fn: LogitsFn, y: Array, *, loss: str, targeted: bool,
               success_aware: bool = False):
  """`ascent.ascend`'s loss: x_adv -> (sum, per-example objective (B,) to maximise, or
  with `success_aware` its `success_rank`)."""
  sign = -1.0 if targeted else 1.0

  def objective(xa):
    logits = logits_fn(xa)
    obj = sign * loss_per_example(logits, y, loss=loss)
    if success_aware:
      return jnp.sum(obj), success_rank(jax.lax.stop_gradient(logits), y,
                                        jax.lax.stop_gradient(obj), targeted=targeted)
    return jnp.sum(obj), obj

  return objective


def _pgd_run(logits_fn, x, y, keys, *, norm, eps, step_size, num_steps, random_start,
             loss, targeted, track_best, success_aware=False):
  """One PGD run; returns (x_adv, per-example rank) (the objective (B,), maximised, or
  with `success_aware` its `success_rank`)."""
  objective = _objective(logits_fn, y, loss=loss, targeted=targeted,
                         success_aware=success_aware)
  x0 = random_init(keys, x, norm=norm, eps=eps) if random_start else x
  parts = dict(num_steps=num_steps,
               update=ascent.signed_step(step_size, ascent.DIRECTIONS[norm]),
               project=lambda xa: project(xa, x, norm=norm, eps=eps))
  if track_best:
    return ascent.ascend(objective, x0, track_best=True, **parts)
  xa = ascent.ascend(objective, x0, **parts)
  return xa, objective(xa)[1]


def pgd(logits_fn: LogitsFn, x: Array, y: Array, key, *, norm: str, eps, step_size,
        num_steps: int, random_init: bool = True, loss: str = "ce",  # pylint: disable=redefined-outer-name
        targeted: bool = False, restarts: int = 1, track_best: bool = True,
        success_aware: bool = True) -> Array:
  """Projected gradient descent (Madry et al. 2018) in an l_inf or l2 ball.

  Each step: `x <- project(x + step_size * dir(grad loss), x_clean)`, dir = sign(g)
  (linf) or g / ||g||_2 per example (l2); projection onto the eps-ball intersected with
  [0, 1]. Start: `random_init` (uniform in the ball) or the clean image.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K); the model in evaluation mode.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels; the target labels if `targeted`.
    key: one key or per-example keys (see module docstring); needed only with
      `random_init` (may be None without it).
    norm: 'linf' or 'l2'.
    eps: ball radius (>= 0): a number, text such as '8/255', or one per example (B,).
    step_size: step length (a finite number >= 0, or one per example (B,)), e.g.
      2.5 * eps / num_steps.
    num_steps: number of gradient steps (static).
    random_init: start uniformly in the ball (else at `x`).
    loss: 'ce', 'margin' (max_{i!=y} z_i - z_y) or 'dlr'; maximised (minimised if
      `targeted`).
    targeted: move towards the labels `y`.
    restarts: independent random restarts (static); per example the best is kept.
    track_best: return per example the best of all `num_steps + 1` iterates (for
      evaluation); else the last iterate. With the same key, more steps never give a
      worse result (the first iterates coincide).
    success_aware: "best" (over iterates and restarts) ranks a successful iterate
      (misclassified; targeted: classified as the target) above every other, the
      largest margin first, and only then the highest loss (`success_rank`;
      AutoAttack's rule). False: the highest loss alone (our earlier behaviour, which
      can return a correctly classified point when an earlier iterate was not).
  Returns:
    x_adv (B, H, W, C) with ||x_adv - x||_p <= eps and x_adv in [0, 1].
  Raises:
    ValueError: for an unknown norm or loss, a negative, NaN or infinite eps/step_size
      (or text that is not a number), an empty batch, bad shapes, non-float x, x
      outside [0, 1] or labels outside [0, K) (when concrete), a `logits_fn` that fails
      on x (named, with the original error chained) or does not return float (B, K),
      restarts < 1, flags that are not bools, or key=None with `random_init`.
  Warns:
    UserWarning: for an l_inf eps > 1 (a 0-255 value such as 8 instead of 8/255), or an
      l2 eps >= sqrt(H * W * C) (the ball holds every image).
  """
  eps = as_radius(eps)
  check_attack_args(logits_fn, x, y, norm=norm, eps=eps, loss=loss)
  step_size = check_step_size(step_size, x)
  check_steps(num_steps)
  check_restarts(restarts)
  for flag, value in (("random_init", random_init), ("targeted", targeted),
                      ("track_best", track_best), ("success_aware", success_aware)):
    check_bool(value, flag)
  if random_init:
    check_key(key, reason="random_init=True draws a random start; pass random_init=False "
              "to start at x without a key")
  if key is None:  # no random draws: every restart starts at x
    restart_keys = [None] * restarts
  else:
    keys = per_example_keys(key, x.shape[0])
    restart_keys = jax.vmap(lambda k: jax.random.split(k, restarts))(keys)  # (B, R[, 2])
    restart_keys = [restart_keys[:, r] for r in range(restarts)]
  best_x, best_obj = None, None
  for r in range(restarts):
    xa, obj = _pgd_run(logits_fn, x, y, restart_keys[r], norm=norm, eps=eps,
                       step_size=step_size, num_steps=num_steps, random_start=random_init,
                       loss=loss, targeted=targeted, track_best=track_best,
                       success_aware=success_aware)
    best_x, best_obj = ((xa, obj) if best_x is None  # restarts: per example the best
                       else ascent.keep_better(obj, best_obj, xa, best_x))
  return best_x


# --------------------------------------------------------------------------- one-step


def _one_step(logits_fn, x, y, eps, norm):
  """One unprojected step of size eps from x, clipped to [0, 1] (FGSM / FGM)."""
  return ascent.ascend(_objective(logits_fn, y, loss="ce", targeted=False), x, num_steps=1,
                       update=ascent.signed_step(eps, ascent.DIRECTIONS[norm]),
                       project=lambda xa: jnp.clip(xa, 0.0, 1.0), unroll=True)


def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps) -> Array:
  """Fast gradient sign method: `clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)`.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    eps: l_inf radius (>= 0; a value > 1 warns: 0-255 scale?).
  Returns:
    x_adv (B, H, W, C) in [0, 1], ||x_adv - x||_inf <= eps.
  Raises:
    ValueError: as `pgd`.
  """
  eps = as_radius(eps)
  check_attack_args(logits_fn, x, y, norm="linf", eps=eps)
  return _one_step(logits_fn, x, y, eps, "linf")


def fgm(logits_fn: LogitsFn, x: Array, y: Array, *, eps) -> Array:
  """Fast gradient method (l2): `clip(x + eps * g / ||g||_2, 0, 1)`, g = grad_x CE.

  The norm is per example over all non-batch dims; examples with g = 0 stay at x.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    eps: l2 radius (>= 0).
  Returns:
    x_adv (B, H, W, C) in [0, 1], ||x_adv - x||_2 <= eps.
  Raises:
    ValueError: as `pgd`.
  """
  eps = as_radius(eps)
  check_attack_args(logits_fn, x, y, norm="l2", eps=eps)
  return _one_step(logits_fn, x, y, eps, "l2")
