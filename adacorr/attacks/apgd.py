"""APGD: Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks"), l_inf and l2, CE and DLR losses.

Per example (all state is per example, so one example's run never depends on others):
  x_0 = random start in the ball (`lp.random_init`); eta = 2 * eps;
  x_1 = P(x_0 + eta * dir(g_0));
  z_{k+1} = P(x_k + eta * dir(g_k)),
  x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})),  alpha = 0.75;
  P = projection onto the eps-ball intersected with [0, 1]; dir = sign (linf) or
  g / ||g||_2 (l2). The best point (highest loss) is tracked for the step-size
  schedule, and the returned point separately (a misclassified iterate first, see
  `apgd`'s `success_aware`). At the checkpoints
  w_j ~ p_j * N (integers, see `checkpoints`), p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (interval lengths
  max(int(.22N),1), then minus max(int(.03N),1) each time, at least max(int(.06N),1)),
  the step size is halved and the iterate restarts from the best point when
    (1) the number of increasing steps in the interval is <= rho * interval length
        (the reference's `check_oscillation`: `t <= k * k3`), or
    (2) the step was not halved at the previous checkpoint and the best loss did not
        improve since then.

APGD-T (`apgd_targeted`, AutoAttack's targeted APGD) runs APGD once per target class t,
the 2nd, 3rd, ... largest clean logit, with the targeted DLR loss
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)   (z_pi sorted decreasingly),
and keeps per example a misclassified point if any run found one. With `eot_iter > 1`
(AutoAttack's 'rand' version, for randomised models) every gradient and loss is the
mean over `eot_iter` draws of the model (expectation over transformation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import ascent, lp
from adacorr.core.canonical_conv import canonical_convs
from adacorr.core.checks import (
    check_bool, check_fraction, check_images, check_key, check_norm, check_steps, is_number)
from adacorr.core.keys import per_example_keys
from adacorr.core.radius import as_radius
from adacorr.core.tree import bcast

APGD_LOSSES = ("ce", "dlr", "margin")


def oscillates(count, length, rho):
  """APGD's condition (1): at most `rho * length` of the interval's `length` steps raised
  the loss (`count` of them). `<=` as the reference's `check_oscillation`
  (`t <= k * k3`); our earlier `<` missed the tie (e.g. 3 of 4 at rho 0.75)."""
  return count <= rho * length


def dlr_targeted(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
  """AutoAttack's targeted DLR loss (B,): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12),
  z_pi the logits sorted decreasingly; needs K >= 4. Larger is more adversarial."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] < 4:
    raise ValueError(f"the targeted DLR loss needs at least 4 classes; logits have "
                     f"{logits.shape[-1]}.")
  top = jax.lax.top_k(logits, 4)[0]
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def target_classes(logits: jax.Array, rank) -> jax.Array:
  """The (B,) class with the `rank`-th largest logit (rank 2: the runner-up), AutoAttack's
  choice of targets (`output.sort()[1][:, -rank]`; ties: the lower class first). `rank`
  may be traced (then it is not range-checked)."""
  if isinstance(rank, (int, np.integer)) and not 1 <= rank <= logits.shape[-1]:
    raise ValueError(f"target rank {rank!r} must be in [1, {logits.shape[-1]}].")
  order = jnp.argsort(-logits.astype(jnp.float32), axis=-1, stable=True)
  return jnp.take(order, jnp.asarray(rank, jnp.int32) - 1, axis=-1)


def _eot_logits(logits_fn, eot_iter: int, keys):
  """x -> (eot_iter, B, K) logits: one draw (`logits_fn(x)`) without EOT, else `eot_iter`
  draws of a randomised `logits_fn(x, keys)` with fresh per-example keys each draw."""
  if eot_iter == 1:
    return lambda xa, it: logits_fn(xa)[None]

  def draws(xa, it):
    ks = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, it), eot_iter))(keys)
    return jnp.stack([logits_fn(xa, ks[:, j]) for j in range(eot_iter)])

  return draws


def checkpoints(num_steps: int) -> list[int]:
  """Iteration counts w_1 < w_2 < ... <= num_steps after which APGD checks its conditions.

  Follows the reference integer schedule: first interval `max(int(0.22 N), 1)` steps,
  each next one `max(int(0.03 N), 1)` shorter, but at least `max(int(0.06 N), 1)`.
  """
  k = max(int(0.22 * num_steps), 1)
  decr = max(int(0.03 * num_steps), 1)
  k_min = max(int(0.06 * num_steps), 1)
  out, w = [], 0
  while w + k <= num_steps:
    w += k
    out.append(w)
    k = max(k - decr, k_min)
  return out


def _apgd_run(logits_fn, x, y, keys, *, norm, eps, num_steps, loss, rho, success_aware,
              target=None, eot_iter=1):
  """One APGD run; returns (x_best (B, ...), loss_best (B,)), or with `success_aware`
  the best iterate by `lp.success_rank` and that rank. `target` (B,): the targeted DLR
  loss towards it (success is still any misclassification, as in AutoAttack)."""
  b = x.shape[0]
  bc = lambda v: bcast(v, x)
  proj = lambda xa: lp.project(xa, x, norm=norm, eps=eps)
  model = _eot_logits(logits_fn, eot_iter, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
                      if eot_iter > 1 else None)

  def per_draw(logits):
    if target is not None:
      return dlr_targeted(logits, y, target)
    return lp.loss_per_example(logits, y, loss=loss)

  def total(xa, it):
    logits = model(xa, it)  # (draws, B, K)
    obj = jnp.mean(jax.vmap(per_draw)(logits), axis=0)
    return jnp.sum(obj), (obj, jnp.mean(logits, axis=0))

  # On XLA:CPU the input-gradient convolutions inside the loop take a slow path unless
  # their kernels are canonical (`core.canonical_conv`: ~3x per step on a ResNet-18).
  value_and_grad = jax.value_and_grad(total, has_aux=True)
  if jax.default_backend() == "cpu":
    value_and_grad = canonical_convs(value_and_grad)

  def obj_grad(xa, it=0):
    (_, (obj, logits)), g = value_and_grad(xa, it)
    return obj, g, lp.success_rank(logits, y, obj)

  # Static checkpoint schedule as arrays indexed by the iteration (0-based: the check
  # runs at the end of iteration i when i + 1 is a checkpoint).
  cps = checkpoints(num_steps)
  is_check = np.zeros((max(num_steps, 1),), bool)
  length = np.ones((max(num_steps, 1),), np.float32)
  prev = 0
  for w in cps:
    is_check[w - 1] = True
    length[w - 1] = w - prev
    prev = w
  is_check, length = jnp.asarray(is_check), jnp.asarray(length)

  x0 = lp.random_init(keys, x, norm=norm, eps=eps)
  loss0, g0, rank0 = obj_grad(x0)
  state = dict(
      x=x0, x_prev=x0, g=g0, loss=loss0,
      x_best=x0, g_best=g0, loss_best=loss0, x_top=x0, rank_top=rank0,
      step=jnp.full((b,), 2.0, jnp.float32) * eps,
      count=jnp.zeros((b,), jnp.float32),
      loss_best_last=loss0, reduced_last=jnp.ones((b,), bool))

  def body(i, s):
    alpha = jnp.where(i == 0, 1.0, 0.75)
    xk = s["x"]
    z = proj(xk + bc(s["step"]) * lp.steepest_direction(s["g"], norm))
    x_new = proj(xk + alpha * (z - xk) + (1.0 - alpha) * (xk - s["x_prev"]))
    loss_new, g_new, rank_new = obj_grad(x_new, i + 1)
    x_top, rank_top = ascent.keep_better(rank_new, s["rank_top"], x_new, s["x_top"])
    count = s["count"] + (loss_new > s["loss"]).astype(jnp.float32)
    better = loss_new > s["loss_best"]
    x_best = jnp.where(bc(better), x_new, s["x_best"])
    g_best = jnp.where(bc(better), g_new, s["g_best"])
    loss_best = jnp.where(better, loss_new, s["loss_best"])

    # Checkpoint: halve the step and restart from the best point where a condition holds.
    check = is_check[i]
    osc = oscillates(count, length[i], rho)
    no_impr = jnp.logical_not(s["reduced_last"]) & (s["loss_best_last"] >= loss_best)
    reduce = check & (osc | no_impr)
    r = bc(reduce)
    return dict(
        x=jnp.where(r, x_best, x_new), x_prev=xk,
        g=jnp.where(r, g_best, g_new), loss=jnp.where(reduce, loss_best, loss_new),
        x_best=x_best, g_best=g_best, loss_best=loss_best, x_top=x_top, rank_top=rank_top,
        step=jnp.where(reduce, s["step"] / 2.0, s["step"]),
        count=jnp.where(check, 0.0, count),
        loss_best_last=jnp.where(check, loss_best, s["loss_best_last"]),
        reduced_last=jnp.where(check, osc | no_impr, s["reduced_last"]))

  state = jax.lax.fori_loop(0, num_steps, body, state)
  if success_aware:
    return state["x_top"], state["rank_top"]
  return state["x_best"], state["loss_best"]


def apgd(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key, *, norm: str = "linf",
         eps, num_steps: int = 100, loss: str = "ce", rho: float = 0.75,
         restarts: int = 1, success_aware: bool = True, eot_iter: int = 1) -> jax.Array:
  """Auto-PGD (untargeted) in an l_inf or l2 ball; returns, per example, a misclassified
  point if any iterate of any restart was misclassified (the largest margin), else the
  highest-loss point found (`success_aware=False`: the highest-loss point).

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K); the model in evaluation mode.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    key: one key or per-example keys (typed (B,) / raw (B, 2)); example i then
      depends only on x[i], y[i], key[i].
    norm: 'linf' or 'l2'.
    eps: ball radius (>= 0); the initial step size is 2 * eps.
    num_steps: iterations (static), each one gradient evaluation.
    loss: 'ce', 'dlr' (-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12); K >= 3)
      or 'margin'. With 'dlr'/'margin' the highest-loss point is misclassified
      whenever any iterate was.
    rho: the fraction of increasing steps below which the step size is halved.
    restarts: independent random starts (static); per example the best wins.
    success_aware: rank iterates and restarts by `lp.success_rank` (AutoAttack keeps
      any misclassified iterate); False: by the loss alone (our earlier behaviour). The
      step-size schedule follows the loss either way.
    eot_iter: draws of a randomised model averaged per step (static; AutoAttack's
      'rand' version uses 20). With `eot_iter > 1`, `logits_fn` is called as
      `logits_fn(x, keys)` with fresh per-example keys (B,) for its random draws.
  Returns:
    x_adv (B, H, W, C) with ||x_adv - x||_p <= eps and x_adv in [0, 1].
  Raises:
    ValueError: as `pgd` (unknown norm/loss, negative or NaN eps, bad shapes or
      values of x and y, a `logits_fn` not returning (B, K)), rho outside [0, 1],
      restarts < 1, key=None.
  """
  eps = as_radius(eps)
  _check(logits_fn, x, y, key, norm=norm, eps=eps, loss=loss, num_steps=num_steps, rho=rho,
         restarts=restarts, eot_iter=eot_iter, success_aware=success_aware)
  return _restarts(logits_fn, x, y, key, restarts, [None], norm=norm, eps=eps,
                   num_steps=num_steps, loss=loss, rho=rho, success_aware=success_aware,
                   eot_iter=eot_iter)


def apgd_targeted(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key, *,
                  norm: str = "linf", eps, num_steps: int = 100, num_targets: int = 9,
                  target_ranks=None, rho: float = 0.75, restarts: int = 1,
                  success_aware: bool = True) -> jax.Array:
  """APGD-T (AutoAttack's targeted APGD): one APGD run per target class with the targeted
  DLR loss (`dlr_targeted`), the targets the 2nd ... (num_targets+1)-th largest clean
  logits; returns per example a misclassified point if any run (any target, any restart)
  found one (the largest margin), else the highest-loss point of the last target's runs
  ranked by loss.

  Args:
    logits_fn, x, y, key, norm, eps, num_steps, rho, restarts, success_aware: as `apgd`
      (AutoAttack standard: 100 steps, 1 restart per target).
    num_targets: target classes tried (AutoAttack standard: 9; needs K >= num_targets + 1
      and K >= 4).
    target_ranks: the logit ranks to target instead (e.g. `(3,)`: only the third
      largest); `autoattack` passes one rank at a time to attack only the examples still
      robust after the previous target, as the reference does.
  Returns:
    x_adv (B, H, W, C) with ||x_adv - x||_p <= eps and x_adv in [0, 1].
  Raises:
    ValueError: as `apgd`, and for num_targets < 1 or >= K, or a rank outside [2, K].
  """
  eps = as_radius(eps)
  _check(logits_fn, x, y, key, norm=norm, eps=eps, loss="ce", num_steps=num_steps, rho=rho,
         restarts=restarts, eot_iter=1, success_aware=success_aware)
  num_classes = jax.eval_shape(logits_fn, x).shape[-1]
  if target_ranks is None:
    if isinstance(num_targets, bool) or not isinstance(num_targets, int) or not (
        1 <= num_targets < num_classes):
      raise ValueError(f"num_targets={num_targets!r} must be an int in [1, {num_classes - 1}] "
                       f"(the model has {num_classes} classes).")
    target_ranks = range(2, num_targets + 2)
  target_ranks = tuple(int(r) for r in target_ranks)
  for r in target_ranks:
    if not 2 <= r <= num_classes:
      raise ValueError(f"target_ranks contains {r}; ranks must be in [2, {num_classes}].")
  if num_classes < 4:
    raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes; the model has "
                     f"{num_classes}.")
  clean = logits_fn(x)
  targets = [target_classes(clean, r) for r in target_ranks]
  return _restarts(logits_fn, x, y, key, restarts, targets, norm=norm, eps=eps,
                   num_steps=num_steps, loss="dlr", rho=rho, success_aware=success_aware,
                   eot_iter=1)


def apgd_targeted_rank(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key, rank, *,
                       norm: str = "linf", eps, num_steps: int = 100, rho: float = 0.75,
                       restarts: int = 1, success_aware: bool = True) -> jax.Array:
  """APGD-T against one target, the class of the `rank`-th largest clean logit, with
  `rank` a (possibly traced) int in [2, K]: one compiled function serves every target
  (`autoattack` runs the ranks one after another on the examples still robust).
  Otherwise as `apgd_targeted`."""
  eps = as_radius(eps)
  _check(logits_fn, x, y, key, norm=norm, eps=eps, loss="ce", num_steps=num_steps, rho=rho,
         restarts=restarts, eot_iter=1, success_aware=success_aware)
  num_classes = jax.eval_shape(logits_fn, x).shape[-1]
  if num_classes < 4:
    raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes; the model has "
                     f"{num_classes}.")
  if isinstance(rank, (int, np.integer)) and not 2 <= rank <= num_classes:
    raise ValueError(f"rank={rank!r} must be in [2, {num_classes}].")
  targets = [target_classes(logits_fn(x), rank)]
  return _restarts(logits_fn, x, y, key, restarts, targets, norm=norm, eps=eps,
                   num_steps=num_steps, loss="dlr", rho=rho, success_aware=success_aware,
                   eot_iter=1)


def _check(logits_fn, x, y, key, *, norm, eps, loss, num_steps, rho, restarts, eot_iter,
           success_aware=True):
  if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
    raise ValueError(f"eot_iter={eot_iter!r} must be a Python int >= 1.")
  if eot_iter == 1:
    num_classes = lp.check_attack_args(logits_fn, x, y, norm=norm, eps=eps, loss=loss,
                                       losses=APGD_LOSSES)
    if loss == "dlr" and num_classes < 3:  # before anything is compiled
      raise ValueError(f"loss='dlr' needs at least 3 classes; logits have {num_classes}.")
  else:  # a randomised model logits_fn(x, keys): check only what needs no call
    check_images(x, allow_empty=False)
    check_norm(norm)
    lp.check_radius(eps, norm, image_shape=jnp.shape(x))
    lp.check_loss(loss, APGD_LOSSES)
  check_steps(num_steps)
  if not is_number(rho):
    raise ValueError(f"rho={rho!r} must be a Python number in [0, 1].")
  check_fraction(rho, "rho")
  check_bool(success_aware, "success_aware")
  lp.check_restarts(restarts)
  check_key(key, reason="APGD starts at a random point in the ball")


def _restarts(logits_fn, x, y, key, restarts, targets, **kw):
  """Every (target, restart) run with its own per-example keys; per example the best."""
  keys = per_example_keys(key, x.shape[0])
  run_keys = jax.vmap(lambda k: jax.random.split(k, restarts * len(targets)))(keys)
  best_x, best_loss, j = None, None, 0
  for target in targets:
    for _ in range(restarts):
      xa, la = _apgd_run(logits_fn, x, y, run_keys[:, j], target=target, **kw)
      j += 1
      best_x, best_loss = ((xa, la) if best_x is None  # per example the best
                           else ascent.keep_better(la, best_loss, xa, best_x))
  return best_x
