"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack"), l_inf and l2, as
AutoAttack runs it (its `FABAttack` with `targeted=True`).

FAB looks for the adversarial point of SMALLEST norm; AutoAttack keeps it when its norm
is <= eps. Per example x (correctly classified, label y) and target class t, with
f(v) = z_t(v) - z_y(v) (f < 0 at x), starting at x_1 = x (restart 0) or a random point:
  repeat num_steps times (one gradient per step):
    w = grad f(x_1), b = w . x_1 - f(x_1)  (the linearised boundary {v: w . v = b});
    d_1 = P(x_1), d_2 = P(x): the minimal-norm step from x_1 (resp. x) onto the
      hyperplane intersected with the box [0, 1] (`project_hyperplane_box_linf` /
      `_l2`, the reference's exact projections);
    alpha = min(max(a_1 / (a_1 + a_2), 0), alpha_max), a_i = max(||d_i||_p, 1e-8);
    x_1 = clip((x_1 + eta d_1)(1 - alpha) + (x + eta d_2) alpha, 0, 1)
      (biased towards x, eta > 1 extrapolates past the boundary);
    if argmax z(x_1) != y: keep x_1 when ||x_1 - x||_p is the smallest so far, and step
      back towards x: x_1 = x + beta (x_1 - x).
  Restart r > 0 starts at clip(x + 0.5 min(res, eps) u, 0, 1), u uniform in [-1, 1]^d
  scaled to ||u||_inf = 1 (l_inf) or Gaussian scaled to ||u||_2 = 1 (l2), res the
  smallest norm found so far for this target (inf before any).
`fab` runs the targets t = the 2nd, ..., (num_targets+1)-th largest clean logit and keeps
per example the smallest-norm misclassified point over all targets and restarts.

Shapes and ranges: x NHWC float32 in [0, 1], (B, H, W, C); y int (B,); logits_fn(x) ->
(B, K). Norms are per example over all non-batch dimensions. All state (iterates,
norms, step sizes) is per example; `logits_fn` and `jax.grad` run on the whole batch
(the gradient of the SUM of the per-example f is the per-example gradient, examples
being independent). Random starts are drawn per example under `vmap` from per-example
keys, so example i's result depends only on x[i], y[i], key[i] (see `adacorr.attacks.lp`).
Pure and jittable: norm, num_steps, num_targets, restarts are static.

Deviations from the reference (fra31/auto-attack, fab_base.py / fab_projections.py):
  - The projections evaluate the bisection's condition at every sorted breakpoint at once
    (cumsums), then run the reference's bisection (ceil(log2 d) halvings) on those
    conditions for all rows, instead of on the subset of rows it applies to; the
    branches are then selected with `where`. Denominators that are 0 (degenerate rows,
    where the reference would produce inf/NaN) are guarded (step 0 there).
  - Per-example sums (w . x, l2 norms) use a fixed pairwise tree (`row_sum`) rather than
    XLA's reduction, whose order can depend on the batch size: FAB's discrete decisions
    amplify 1-ulp differences, and this keeps an example's result the same alone or in
    a batch (up to the rounding of fused elementwise code). Results agree with the
    reference's float32 projections to float32 rounding.
  - Under jit every example runs every target and restart (the reference attacks only
    the examples still robust after the previous target/restart); examples are
    independent, so the set of examples fooled within eps is the same, and we return
    the smallest-norm point over all runs rather than the first run's point within eps.
  - Restarts run inside one call and the random start's scale is 0.5 min(res, eps) with
    res the best norm of the previous restarts of the same target (the original FAB
    code); AutoAttack calls a fresh run per restart (res = 1e10, scale 0.5 eps). The two
    agree on every example not yet fooled within eps, the only ones AutoAttack attacks.
  - Clean points already misclassified are returned unchanged with norm 0 (the
    reference returns them unchanged and does not attack them).
  - Targets: `jax.lax.top_k` of the clean logits (ties may be ordered differently from
    the reference's `sort`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import lp
from adacorr.core.canonical_conv import canonical_convs
from adacorr.core.checks import check_key, check_labels, check_steps, is_number
from adacorr.core.keys import per_example_keys
from adacorr.core.radius import as_radius
from adacorr.core.tree import bcast

Array = jax.Array

_BIG = 1e12  # the reference's "no breakpoint" value in projection_l2


# --------------------------------------------------------------------------- projections


def row_sum(v: Array) -> Array:
  """Per-row sums (N,) of `v` (N, n) by a fixed pairwise tree of elementwise adds.

  XLA may order a reduction's additions differently for different batch sizes, and
  FAB's discrete decisions (is the iterate misclassified, which point is closest) turn
  1-ulp differences into different results; elementwise adds are exact functions of
  their inputs, so these sums are bit-identical for a row alone or in any batch.
  """
  while v.shape[1] > 1:
    if v.shape[1] % 2:
      v = jnp.concatenate([v, jnp.zeros_like(v[:, :1])], axis=1)
    v = v[:, 0::2] + v[:, 1::2]
  return v[:, 0]


def _take(a: Array, idx: Array) -> Array:
  """Row-wise gather: a (N, n), idx (N,) -> (N,)."""
  return jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def _bisect(cond: Array) -> Array:
  """The reference's bisection over breakpoint indices on precomputed conditions `cond`
  (N, n) bool: lb = 0, ub = n - 1, then ceil(log2 n) times k = floor((lb + ub) / 2),
  lb = k where cond[k] else ub = k. Returns lb (N,) int32 (for conditions true below
  some index and false from it on, the last true index)."""
  rows, n = cond.shape

  def body(_, lu):
    lb, ub = lu
    k = (lb + ub) // 2
    c = _take(cond, k)
    return jnp.where(c, k, lb), jnp.where(c, ub, k)

  lu = (jnp.zeros((rows,), jnp.int32), jnp.full((rows,), n - 1, jnp.int32))
  return jax.lax.fori_loop(0, math.ceil(math.log2(n)) if n > 1 else 0, body, lu)[0]


def _safe(v: Array) -> Array:
  return jnp.where(v == 0, 1.0, v)


def project_hyperplane_box_linf(t: Array, w: Array, b: Array) -> Array:
  """The minimal l_inf step onto a hyperplane within the box [0, 1] (the reference's
  `projection_linf`).

  Per row: d minimising ||d||_inf subject to w . (t + d) = b and 0 <= t + d <= 1
  (coordinates with w_i = 0 stay 0). The solution is d_i = clip(-lam s_i, -t_i, 1 - t_i)
  with s = sign(w . t - b) sign(w) and lam the smallest radius that reaches the plane,
  found from the sorted per-coordinate room p_i = |d_i| of the box corner. When the
  plane does not meet the box, d is that corner (the closest the box gets to the plane).

  Args:
    t: (N, d) points in [0, 1].
    w: (N, d) normals.
    b: (N,) offsets.
  Returns:
    (N, d) steps d.
  """
  n_rows, n = t.shape
  sign = jnp.where(row_sum(w * t) - b >= 0, 1.0, -1.0).astype(t.dtype)
  w = w * sign[:, None]
  b = b * sign
  nz = (w != 0).astype(t.dtype)
  a = (w < 0).astype(t.dtype)
  d = (a - t) * nz  # the box corner that lowers w . t the most
  p = a - t * (2 * a - 1)  # the room |d_i| of each coordinate
  indp = jnp.argsort(p, axis=1)
  b = b - row_sum(w * t)  # <= 0: the change of w . t needed
  b0 = row_sum(w * d)  # the most negative change the box allows

  indp2 = indp[:, ::-1]  # decreasing room
  ws = jnp.take_along_axis(w, indp2, axis=1)
  ps = jnp.take_along_axis(p, indp2, axis=1)
  bs2 = -ws * jnp.take_along_axis(d, indp2, axis=1)
  s = jnp.cumsum(jnp.abs(ws), axis=1)
  sb = jnp.cumsum(bs2, axis=1) + b0[:, None]

  b2 = sb[:, -1] - s[:, -1] * ps[:, -1]  # the change at radius min(p): nothing saturated
  c_l = b - b2 > 0
  c2 = (b - b0 > 0) & (b - b2 <= 0)
  lb = _bisect(b[:, None] - (sb - s * ps) > 0)  # the change at radius ps[k] overshoots

  lmbd_l = jnp.maximum((b - sb[:, -1]) / -_safe(s[:, -1]), 0.0)
  d_l = (2 * a - 1) * lmbd_l[:, None]
  s_lb = _take(s, lb)
  lmbd_2 = jnp.where(s_lb == 0, 0.0,
                     jnp.maximum((b - _take(sb, lb)) / -_safe(s_lb), 0.0))[:, None]
  d_2 = jnp.minimum(lmbd_2, d) * a + jnp.maximum(-lmbd_2, d) * (1 - a)
  d = jnp.where(c_l[:, None], d_l, jnp.where(c2[:, None], d_2, d))
  return d * nz


def project_hyperplane_box_l2(t: Array, w: Array, b: Array) -> Array:
  """The minimal l2 step onto a hyperplane within the box [0, 1] (the reference's
  `projection_l2`).

  Per row: d minimising ||d||_2 subject to w . (t + d) = b and 0 <= t + d <= 1
  (coordinates with |w_i| <= 1e-8 stay 0). The solution is d = clip(-alpha w', -t, 1 - t),
  w' = sign(w . t - b) w, alpha >= 0 found from the sorted breakpoints r_i where
  coordinate i reaches the box. When the plane does not meet the box, d is the box
  corner closest to it.

  Args:
    t: (N, d) points in [0, 1].
    w: (N, d) normals.
    b: (N,) offsets.
  Returns:
    (N, d) steps d.
  """
  n_rows, n = t.shape
  big = jnp.asarray(_BIG, t.dtype)
  c = row_sum(w * t) - b
  neg = c < 0
  w = jnp.where(neg[:, None], -w, w)
  c = jnp.where(neg, -c, c)  # >= 0: w . d must be -c

  small = jnp.abs(w) < 1e-8
  w_safe = jnp.where(small, 1.0, w)
  r = jnp.clip(jnp.maximum(t / w_safe, (t - 1) / w_safe), -big, big)
  r = jnp.where(small, big, r)
  r = jnp.where(r == -big, big, r)
  indr = jnp.argsort(r, axis=1)
  rs = jnp.take_along_axis(r, indr, axis=1)
  rs2 = jnp.concatenate([rs[:, 1:], jnp.zeros_like(rs[:, :1])], axis=1)
  rs = jnp.where(rs == big, 0.0, rs)
  rs2 = jnp.where(rs2 == big, 0.0, rs2)

  w3s = jnp.take_along_axis(w ** 2, indr, axis=1)
  w5 = row_sum(w3s)[:, None]
  ws = w5 - jnp.cumsum(w3s, axis=1)  # sum of w_j^2 over the coordinates after the k-th
  keep = (~small).astype(t.dtype)
  d = -(r * w) * keep  # the box corner
  s = jnp.concatenate(
      [-w5 * rs[:, :1], jnp.cumsum((rs - rs2) * ws, axis=1) - w5 * rs[:, :1]], axis=1)

  c4 = s[:, 0] + c < 0
  c3 = row_sum(d * w) + c > 0
  c2 = ~c4 & ~c3
  lb = _bisect(s[:, :n] + c[:, None] > 0)

  alpha4 = c / _safe(w5[:, 0])
  d4 = -alpha4[:, None] * w
  ws_lb = _take(ws, lb)
  alpha2 = jnp.where(ws_lb == 0, 0.0, (_take(s, lb) + c) / _safe(ws_lb) + _take(rs, lb))
  c5 = alpha2[:, None] > r
  d2 = jnp.where(c5, d, -alpha2[:, None] * w)
  d = jnp.where(c4[:, None], d4, jnp.where(c2[:, None], d2, d))
  return d * keep


PROJECTIONS = {"linf": project_hyperplane_box_linf, "l2": project_hyperplane_box_l2}


def _linf(v: Array) -> Array:
  return jnp.max(jnp.abs(v.reshape(v.shape[0], -1)), axis=1)  # max: exact in any order


def _l2(v: Array) -> Array:
  return jnp.sqrt(row_sum(jnp.square(v.reshape(v.shape[0], -1))))


NORM_FNS = {"linf": _linf, "l2": _l2}


# --------------------------------------------------------------------------- the attack


def _random_start_one(key: Array, x: Array, scale, norm: str) -> Array:
  """One example's random start: clip(x + 0.5 scale u / ||u||_p, 0, 1)."""
  if norm == "linf":
    u = jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)
    u = u / jnp.maximum(jnp.max(jnp.abs(u)), 1e-12)
  else:
    u = jax.random.normal(key, x.shape, x.dtype)
    u = u / jnp.maximum(jnp.sqrt(row_sum(jnp.square(u).reshape(1, -1))[0]), 1e-12)
  return jnp.clip(x + scale * u * 0.5, 0.0, 1.0)


def _fab_run(logits_fn, x, y, target, keys, correct, *, norm, eps, num_steps, restarts,
             alpha_max, eta, beta):
  """All restarts of FAB-T towards `target` (B,); returns (x_adv, norms): per example the
  smallest-norm misclassified iterate (norm inf and x where none; x and 0 where the
  clean point is misclassified, `correct` False). `keys` (B,) per-example keys (None
  when restarts == 1)."""
  bsz = x.shape[0]
  flat = lambda v: v.reshape(bsz, -1)
  bc = lambda v: bcast(v, x)
  proj = PROJECTIONS[norm]
  norm_fn = NORM_FNS[norm]
  x0 = flat(x)

  def f_sum(v):
    z = logits_fn(v)
    diff = _take(z, target) - _take(z, y)  # f = z_t - z_y, < 0 while classified as y
    return jnp.sum(diff), diff

  value_and_grad = jax.value_and_grad(f_sum, has_aux=True)
  if jax.default_backend() == "cpu":  # fast input-gradient convolutions in the loop
    value_and_grad = canonical_convs(value_and_grad)

  def step(_, s):
    x1, adv, res = s
    (_, df), dg = value_and_grad(x1)
    w = flat(dg)
    b = -df + row_sum(w * flat(x1))
    d3 = proj(jnp.concatenate([flat(x1), x0]), jnp.concatenate([w, w]),
              jnp.concatenate([b, b]))  # from x_1 and from x, as the reference
    d1, d2 = d3[:bsz].reshape(x.shape), d3[bsz:].reshape(x.shape)
    a1 = jnp.maximum(norm_fn(d1), 1e-8)
    a2 = jnp.maximum(norm_fn(d2), 1e-8)
    alpha = bc(jnp.minimum(jnp.maximum(a1 / (a1 + a2), 0.0), alpha_max))
    x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x + eta * d2) * alpha, 0.0, 1.0)
    is_adv = jnp.argmax(logits_fn(x1), axis=-1) != y
    t = norm_fn(x1 - x)
    better = is_adv & (t < res)
    adv = jnp.where(bc(better), x1, adv)
    res = jnp.where(better, t, res)
    x1 = jnp.where(bc(is_adv), x + (x1 - x) * beta, x1)
    return x1, adv, res

  def restart(r, s):
    adv, res = s
    if keys is None:
      x1 = x
    else:
      scale = jnp.minimum(res, jnp.broadcast_to(jnp.asarray(eps, x.dtype), res.shape))
      rand = jax.vmap(lambda k, xi, sc: _random_start_one(
          jax.random.fold_in(k, r), xi, sc, norm))(keys, x, scale)
      x1 = jnp.where(r == 0, x, rand)
    _, adv, res = jax.lax.fori_loop(0, num_steps, step, (x1, adv, res))
    return adv, res

  init = (x, jnp.full((bsz,), jnp.inf, x.dtype))
  adv, res = jax.lax.fori_loop(0, restarts, restart, init)
  adv = jnp.where(bc(correct), adv, x)
  res = jnp.where(correct, res, 0.0)
  return adv, res


def _check_common(logits_fn, x, y, *, norm, eps, num_steps, restarts, alpha_max, eta,
                  beta) -> int:
  num_classes = lp.check_attack_args(logits_fn, x, y, norm=norm, eps=eps)
  check_steps(num_steps)
  lp.check_restarts(restarts)
  # Constants are checked when they are numbers (traced values pass unchecked).
  for name, value in (("alpha_max", alpha_max), ("eta", eta), ("beta", beta)):
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
      raise ValueError(f"{name}={value!r} must be a number.")
  if is_number(alpha_max) and not 0.0 <= alpha_max <= 1.0:
    raise ValueError(f"alpha_max={alpha_max!r} must be in [0, 1].")
  if is_number(eta) and not eta > 0.0:
    raise ValueError(f"eta={eta!r} must be > 0.")
  if is_number(beta) and not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta={beta!r} must be in [0, 1].")
  return num_classes


def _keys(key, bsz: int, restarts: int):
  if restarts == 1:
    return None
  check_key(key, reason="FAB with restarts > 1 draws random starts")
  return per_example_keys(key, bsz)


def fab_targeted(logits_fn: lp.LogitsFn, x: Array, y: Array, target: Array, key=None, *,
                 norm: str = "linf", num_steps: int = 100, restarts: int = 1,
                 eps=None, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9) -> tuple[Array, Array]:
  """FAB-T towards one given target class per example: the smallest-norm misclassified
  point found (no radius constraint).

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K); the model in evaluation mode.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    target: (B,) int target classes in [0, K) (success is any misclassification, as in
      the reference).
    key: one key or per-example keys; used (and required) only when restarts > 1.
    norm: 'linf' or 'l2'.
    num_steps: iterations per restart (static), each one gradient and two forward passes.
    restarts: runs (static); the first starts at x, the others at random points.
    eps: the random starts' radius (scale 0.5 min(res, eps)); required when restarts > 1.
    alpha_max, eta, beta: the reference's constants (0.1, 1.05, 0.9).
  Returns:
    (x_adv (B, H, W, C) in [0, 1], norms (B,) = ||x_adv - x||_p): per example the
    smallest-norm misclassified iterate; x and inf where none was found; x and 0 where
    x itself is misclassified.
  Raises:
    ValueError: unknown norm, bad x / y / target / logits_fn, negative eps, num_steps
      or restarts not ints (>= 0, >= 1), alpha_max or beta outside [0, 1], eta <= 0,
      key or eps missing with restarts > 1.
  """
  eps = None if eps is None else as_radius(eps)
  num_classes = _check_common(logits_fn, x, y, norm=norm, eps=0.0 if eps is None else eps,
                              num_steps=num_steps, restarts=restarts, alpha_max=alpha_max,
                              eta=eta, beta=beta)
  if restarts > 1 and eps is None:
    raise ValueError("eps is required with restarts > 1 (the random starts' radius).")
  check_labels(target, x.shape[0], num_classes, name="target")
  keys = _keys(key, x.shape[0], restarts)
  correct = jnp.argmax(logits_fn(x), axis=-1) == y
  return _fab_run(logits_fn, x, y, target, keys, correct, norm=norm,
                  eps=jnp.inf if eps is None else eps, num_steps=num_steps,
                  restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta)


def fab(logits_fn: lp.LogitsFn, x: Array, y: Array, key=None, *, norm: str = "linf", eps,
        num_steps: int = 100, num_targets: int = 9, restarts: int = 1,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> Array:
  """FAB-T (AutoAttack's targeted FAB) in an l_inf or l2 ball: one FAB-T run (with
  `restarts` restarts) per target class, the 2nd ... (num_targets+1)-th largest clean
  logit; per example the smallest-norm misclassified point over all runs if its norm is
  <= eps, else the clean x.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K); the model in evaluation mode.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    key: one key or per-example keys (typed (B,) / raw (B, 2)); example i then depends
      only on x[i], y[i], key[i]. Only used (and required) when restarts > 1; may be
      None otherwise (restart 0 starts at x, no randomness).
    norm: 'linf' or 'l2'.
    eps: the radius (>= 0; scalar or (B,)): points farther than eps are not returned;
      also the random starts' radius.
    num_steps: iterations per run (static; AutoAttack: 100).
    num_targets: target classes (static; AutoAttack: 9); needs K >= num_targets + 1.
    restarts: runs per target (static; AutoAttack: 1).
    alpha_max, eta, beta: the reference's constants (0.1, 1.05, 0.9).
  Returns:
    x_adv (B, H, W, C) with ||x_adv - x||_p <= eps and x_adv in [0, 1]; x_adv != x only
    where a misclassified point was found.
  Raises:
    ValueError: as `fab_targeted`, and for num_targets not an int in [1, K - 1].
  """
  eps = as_radius(eps)
  num_classes = _check_common(logits_fn, x, y, norm=norm, eps=eps, num_steps=num_steps,
                              restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta)
  if (isinstance(num_targets, bool) or not isinstance(num_targets, (int, np.integer))
      or not 1 <= num_targets < num_classes):
    raise ValueError(f"num_targets={num_targets!r} must be an int in [1, {num_classes - 1}] "
                     f"(FAB-T needs K >= num_targets + 1; the model has {num_classes} "
                     f"classes).")
  bsz = x.shape[0]
  keys = _keys(key, bsz, restarts)
  clean = logits_fn(x)
  correct = jnp.argmax(clean, axis=-1) == y
  targets = jax.lax.top_k(clean, num_targets + 1)[1][:, 1:]  # (B, num_targets)
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (bsz,))

  def one_target(j, s):
    best_x, best_n = s
    keys_j = None if keys is None else jax.vmap(lambda k: jax.random.fold_in(k, j))(keys)
    xa, na = _fab_run(logits_fn, x, y, targets[:, j], keys_j, correct, norm=norm,
                      eps=eps_b, num_steps=num_steps, restarts=restarts,
                      alpha_max=alpha_max, eta=eta, beta=beta)
    better = na < best_n
    return jnp.where(bcast(better, x), xa, best_x), jnp.where(better, na, best_n)

  init = (x, jnp.full((bsz,), jnp.inf, x.dtype))
  best_x, best_n = jax.lax.fori_loop(0, num_targets, one_target, init)
  return jnp.where(bcast(best_n <= eps_b, x), best_x, x)
