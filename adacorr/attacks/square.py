"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), l_inf and l2, as
AutoAttack runs it (fra31/auto-attack `SquareAttack`: loss 'margin', p_init 0.8, one
restart, 5000 queries; followed as of commit a392200, which has the per-channel window
norms of the l2 step and the clamp of s to min(h, w)). Gradient-free: only `logits_fn`
values are used.

Per example (label y, margin m(v) = z_y(v) - max_{i != y} z_i(v); targeted: y is the
target and m(v) = max_{i != y} z_i(v) - z_y(v), the loss then being the cross-entropy to
y as in the reference; untargeted the loss is m itself):
  examples with m(x) <= 0 (already misclassified) are returned as x. Otherwise
  x_best = P(init), then for it = 0 .. num_queries - 1, while m(x_best) > 0:
    p = p_selection(it) (p_init halved after the iterations 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000: AutoAttack's schedule, `resc_schedule=False`; with
    `rescale_schedule=True` those iterations are of a schedule stretched to 10000
    queries, the Square Attack code's default); a random window of side s at offsets drawn uniformly
    in {0, ..., h - s - 1} (0 when s = h);
    x_new = P(candidate(x_best)); accept x_new as x_best when its loss is lower than
    the best loss so far or it is misclassified (m <= 0).
  P = projection onto the eps-ball intersected with [0, 1] (`lp.project`; in l2 the same
  map with a batch-invariant sum, `_sum_sq`), applied to every candidate before it is
  evaluated, so the returned point is feasible.
l_inf: init x + eps * r, r = +-1 per (column, channel) (vertical stripes); candidate:
  x_best + 2 eps sigma_c on the s x s window (sigma_c = +-1 per channel), projected,
  i.e. the window set to x +- eps; s = max(round(sqrt(p * h * w)), 1).
l2: init: a 5 x 5 grid of blocks of side h // 5, each the "meta pseudo-gaussian" eta
  (`eta`, randomly transposed) times +-1 per channel, scaled to ||delta||_2 = eps;
  candidate: s = max(round(sqrt(p * h * w)), 3), made odd; windows W1, W2; per channel
  the W1 content becomes (eta * sigma_c + delta_W1 / ||delta_W1||) rescaled to the norm
  sqrt(max(eps^2 - ||delta||^2, 0) / c + ||delta_{W1 u W2}||^2) (window norms per
  channel, ||delta|| over the whole image), W2 (outside W1) is zeroed, and the whole
  delta is rescaled to ||delta||_2 = eps (mass moves W2 -> W1).
The schedules are static: `p_selection` (plain Python) gives `square_sizes`, a table of
s per iteration that the `fori_loop` indexes; windows are masks from `arange` compares.

Shapes and ranges: x NHWC float32 in [0, 1], (B, H, W, C); y int (B,); logits_fn(x) ->
(B, K) is called on the whole batch (1 clean + 1 init + num_queries calls); the search
state and every random draw are per example (`vmap` over per-example keys, folded with
the iteration), so example i's result depends only on x[i], y[i], key[i]. Pure and
jittable; norm, num_queries, p_init, targeted, rescale_schedule static; eps a scalar or (B,).

Deviations from the reference:
  - Window offsets, signs and eta's transposition are drawn per example (AutoAttack
    draws one window and one sign vector per iteration for the whole batch; the
    original Square Attack code draws per image, as here).
  - One draw per iteration: no redraw of a candidate that leaves x_best unchanged (the
    original code's data-dependent `while` loop; AutoAttack's version has none either).
  - Under jit every example is evaluated at every iteration; fooled examples (m <= 0)
    are frozen instead of dropped, and there is no early exit.
  - A still-robust example returns its last accepted point x_best (AutoAttack's
    `perturb` returns x for it); a fooled one returns the point that fooled it.
  - The l2 init uses blocks of side max(min(h, w) // 5, 1) cropped at the border (the
    reference fails when the blocks overflow, e.g. h = 18, or h < 5); identical on
    square images where the reference runs.
  - l2 sums of squares use a fixed pairwise order (`_sum_sq`) so that an example gives
    bit-identical results alone or in any batch; the l2 projection uses it too.
  - One restart; targeted attacks need the target labels (no random targets).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import lp
from adacorr.core.checks import check_fraction, check_key, check_positive, check_steps, is_number
from adacorr.core.keys import per_example_keys
from adacorr.core.radius import as_radius
from adacorr.core.tree import bcast, where_examples

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(it: int, num_queries: int, p_init: float = 0.8,
                rescale_schedule: bool = False) -> float:
  """The reference's fraction p of pixels changed at iteration `it` (0-based): p_init,
  halved after each of the iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.

  AutoAttack builds its Square with `resc_schedule=False` (fra31/auto-attack
  `autoattack.py`): those are absolute iterations, so with 5000 queries the last halvings
  (6000, 8000) never come. `rescale_schedule=True` is the Square Attack code's default
  (`resc_schedule=True`): `it` is first mapped to `int(it / num_queries * 10000)`, the
  schedule stretched or squeezed to `num_queries`.
  """
  if rescale_schedule:
    it = int(it / num_queries * 10000)
  return p_init / 2 ** sum(it > t for t in _HALVINGS)


def square_sizes(num_queries: int, p_init: float, h: int, w: int, norm: str,
                 rescale_schedule: bool = False) -> np.ndarray:
  """(num_queries,) int32 window sides s per iteration: max(round(sqrt(p h w)), 1)
  (linf) or max(.., 3) made odd (l2), clamped to min(h, w); p from `p_selection`."""
  sizes = []
  for it in range(num_queries):
    p = p_selection(it, num_queries, p_init, rescale_schedule)
    s = int(round(math.sqrt(p * h * w)))
    if norm == "l2":
      s = max(s, 3)
      s += 1 - s % 2
    sizes.append(min(max(s, 1), h, w))
  return np.asarray(sizes, np.int32)


def _eta_rectangles(x: int, y: int) -> np.ndarray:
  """The reference's `eta_rectangles`: nested centred rectangles weighted 1/(k+1)^2."""
  delta = np.zeros((x, y), np.float64)
  c0, c1 = x // 2, y // 2
  for k in range(max(x // 2 + 1, y // 2 + 1)):
    delta[max(c0, 0):min(c0 + 2 * k + 1, x), max(c1, 0):min(c1 + 2 * k + 1, y)] += 1.0 / (k + 1) ** 2
    c0, c1 = c0 - 1, c1 - 1
  return delta / max(np.sqrt((delta ** 2).sum()), 1e-30)


def eta(s: int) -> np.ndarray:
  """(s, s) unit-l2 "meta pseudo-gaussian": the top s//2 rows positive, the rest negative
  (the reference's `eta` without its random transposition)."""
  delta = np.concatenate([_eta_rectangles(s // 2, s), -_eta_rectangles(s - s // 2, s)])
  return (delta / np.sqrt((delta ** 2).sum())).astype(np.float32)


def _window(h: int, w: int, vh, vw, s) -> jax.Array:
  """(h, w) bool mask of the s x s window at (vh, vw); traced offsets and size."""
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  return (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)


def _offsets(key, h: int, w: int, s):
  """Window offsets uniform in {0, ..., dim - s - 1} (the reference's `random_int`)."""
  kh, kw = jax.random.split(key)
  return (jax.random.randint(kh, (), 0, jnp.maximum(h - s, 1)),
          jax.random.randint(kw, (), 0, jnp.maximum(w - s, 1)))


def _sum_sq(v, channels: bool = False):
  """Sum of squares of one example's v (H, W, C), per channel (C,) with `channels`.
  Pairwise halving by elementwise adds: XLA orders a reduce by the array's shape, so its
  rounding would depend on the batch size; this order does not (bit-identical alone)."""
  v = (v ** 2).reshape((-1, v.shape[-1]) if channels else (-1,))
  while v.shape[0] > 1:
    if v.shape[0] % 2:
      v = jnp.concatenate([v, jnp.zeros_like(v[:1])])
    v = v[:v.shape[0] // 2] + v[v.shape[0] // 2:]
  return v[0]


def _normalize_l2(v):
  return v / (jnp.sqrt(_sum_sq(v)) + 1e-12)


def _project_l2(x_new, x, eps):
  """`lp.project` for one example in l2 (ball, then [0, 1]) with the batch-invariant sum."""
  delta = x_new - x
  delta = delta * jnp.minimum(1.0, eps / jnp.maximum(jnp.sqrt(_sum_sq(delta)), 1e-30))
  return jnp.clip(x + delta, 0.0, 1.0)


def _linf_init(key, x, eps):
  """x + eps * r, r = +-1 per (column, channel): vertical stripes. Per example (H, W, C)."""
  return x + eps * jax.random.rademacher(key, (1,) + x.shape[1:], jnp.float32)


def _linf_update(key, x, x_best, eps, s):
  """x_best + 2 eps sigma_c on a random s x s window (projected by the caller)."""
  h, w, c = x.shape
  k_off, k_sign = jax.random.split(key)
  mask = _window(h, w, *_offsets(k_off, h, w, s), s)
  sign = jax.random.rademacher(k_sign, (c,), jnp.float32)
  return x_best + 2.0 * eps * mask[..., None] * sign


def _l2_init_blocks(h: int, w: int):
  """(n, h, w) float32 block patterns eta and eta^T of the l2 init, cropped at the border."""
  s = max(min(h, w) // 5, 1)
  e = eta(s)
  plain, trans = [], []
  starts = lambda d: [max((d - 5 * s) // 2, 0) + k * s for k in range(d // s)]
  for vh in [v for v in starts(h) if v < h]:
    for vw in [v for v in starts(w) if v < w]:
      for pattern, out in ((e, plain), (e.T, trans)):
        canvas = np.zeros((h + s, w + s), np.float32)
        canvas[vh:vh + s, vw:vw + s] = pattern
        out.append(canvas[:h, :w])
  return np.stack(plain), np.stack(trans)


def _l2_init(key, x, eps, blocks):
  """x + eps * delta / ||delta||, delta = sum over blocks of eta (or eta^T) * +-1 per channel."""
  plain, trans = blocks
  k_t, k_sign = jax.random.split(key)
  flip = jax.random.bernoulli(k_t, 0.5, (plain.shape[0], 1, 1))
  sign = jax.random.rademacher(k_sign, (plain.shape[0], x.shape[-1]), jnp.float32)
  delta = jnp.einsum("nhw,nc->hwc", jnp.where(flip, trans, plain), sign)
  return x + eps * _normalize_l2(delta)


def _l2_update(key, x, x_best, eps, s, eta_pad):
  """The reference's two-window l2 step: W1 gets eta * sigma_c plus its old (normalised)
  content, rescaled per channel so the mass of W1 u W2 plus the slack to eps moves into W1;
  W2 is zeroed; delta is rescaled to norm eps (projected by the caller)."""
  h, w, c = x.shape
  k1, k2, k_t, k_sign = jax.random.split(key, 4)
  delta = x_best - x
  vh, vw = _offsets(k1, h, w, s)
  m1 = _window(h, w, vh, vw, s)[..., None]
  m2 = _window(h, w, *_offsets(k2, h, w, s), s)[..., None]
  norm_w1 = jnp.sqrt(_sum_sq(jnp.where(m1, delta, 0.0), True))  # (C,)
  norm_image = jnp.sqrt(_sum_sq(delta))
  norm_windows = jnp.sqrt(_sum_sq(jnp.where(m1 | m2, delta, 0.0), True))  # (C,)
  e = jnp.where(jax.random.bernoulli(k_t), eta_pad.T, eta_pad)
  size = eta_pad.shape[0]
  e = e[jnp.clip(jnp.arange(h) - vh, 0, size - 1)][:, jnp.clip(jnp.arange(w) - vw, 0, size - 1)]
  sign = jax.random.rademacher(k_sign, (c,), jnp.float32)
  new = jnp.where(m1, e[..., None] * sign + delta / (1e-12 + norm_w1), 0.0)
  new_norm = jnp.sqrt(_sum_sq(new, True))  # (C,)
  target = jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_windows ** 2)
  delta = jnp.where(m1, new / (1e-12 + new_norm) * target, jnp.where(m2, 0.0, delta))
  return x + eps * _normalize_l2(delta)


def _margin_and_loss(logits_fn, x, y, targeted: bool):
  """(margin, loss) (B,): margin <= 0 iff the attack succeeded; the search lowers loss."""
  logits = logits_fn(x).astype(jnp.float32)
  if targeted:
    return (lp.loss_per_example(logits, y, loss="margin"),
            lp.loss_per_example(logits, y, loss="ce"))
  margin = -lp.loss_per_example(logits, y, loss="margin")
  return margin, margin


def square(logits_fn, x, y, key, *, norm: str = "linf", eps, num_queries: int = 5000,
           p_init: float = 0.8, targeted: bool = False,
           rescale_schedule: bool = False) -> jax.Array:
  """Square Attack (see the module docstring): x_adv (B, H, W, C) with
  ||x_adv - x||_p <= eps and x_adv in [0, 1] per example.

  Args:
    logits_fn: x -> (B, K) logits (only its values are used; it may stop gradients).
    x: (B, H, W, C) float images in [0, 1].
    y: (B,) int labels (targeted: the target classes).
    key: one PRNG key or one per example (typed (B,) or raw (B, 2)).
    norm: 'linf' or 'l2'.
    eps: radius, a scalar (a number or text such as '8/255') or (B,).
    num_queries: iterations (one model query per example each), a Python int >= 1.
    p_init: initial fraction of pixels changed, in (0, 1] (a Python number).
    targeted: make the prediction y instead of moving it away from y.
    rescale_schedule: False (AutoAttack's, the default): p halves after the absolute
      iterations 10, 50, ..., 8000; True: the schedule rescaled to 10000 queries (the
      Square Attack code's default; see `p_selection`). A Python bool.
  """
  eps = as_radius(eps)
  lp.check_attack_args(logits_fn, x, y, norm=norm, eps=eps)
  check_steps(num_queries, "num_queries", minimum=1)
  if not isinstance(targeted, bool):
    raise ValueError(f"targeted={targeted!r} must be a Python bool.")
  check_key(key, reason="Square draws its windows and signs at random")
  if not is_number(p_init):
    raise ValueError(f"p_init={p_init!r} must be a Python number in (0, 1].")
  check_positive(p_init, "p_init")
  check_fraction(p_init, "p_init")
  b, h, w, c = x.shape
  keys = per_example_keys(key, b)
  eps_b = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (b,))
  if norm == "linf":
    project = lambda v: lp.project(v, x, norm=norm, eps=eps_b)
  else:
    project = lambda v: jax.vmap(_project_l2)(v, x, eps_b)
  evaluate = lambda v: _margin_and_loss(logits_fn, v, y, targeted)
  split = jax.vmap(jax.random.split)(keys)
  k_init, k_loop = split[:, 0], split[:, 1]
  if not isinstance(rescale_schedule, bool):
    raise ValueError(f"rescale_schedule={rescale_schedule!r} must be a Python bool.")
  sizes_np = square_sizes(num_queries, float(p_init), h, w, norm, rescale_schedule)
  sizes = jnp.asarray(sizes_np)

  if norm == "linf":
    x_init = jax.vmap(_linf_init)(k_init, x, eps_b)
    update = lambda k, xi, xb, e, it: _linf_update(k, xi, xb, e, sizes[it])
  else:
    blocks = tuple(jnp.asarray(a) for a in _l2_init_blocks(h, w))
    x_init = jax.vmap(lambda k, xi, e: _l2_init(k, xi, e, blocks))(k_init, x, eps_b)
    distinct = sorted(set(sizes_np.tolist()))
    side = max(distinct)
    etas = np.zeros((len(distinct), side, side), np.float32)
    for i, s in enumerate(distinct):
      etas[i, :s, :s] = eta(s)
    etas = jnp.asarray(etas)
    which = jnp.asarray(np.searchsorted(distinct, sizes_np).astype(np.int32))
    update = lambda k, xi, xb, e, it: _l2_update(k, xi, xb, e, sizes[it], etas[which[it]])

  attack = evaluate(x)[0] > 0  # already misclassified examples keep x
  x_best = project(x_init)
  margin_min, loss_min = evaluate(x_best)

  def body(it, carry):
    x_best, margin_min, loss_min = carry
    active = attack & (margin_min > 0)
    ks = jax.vmap(jax.random.fold_in, (0, None))(k_loop, it)
    x_new = project(jax.vmap(update, (0, 0, 0, 0, None))(ks, x, x_best, eps_b, it))
    margin, loss = evaluate(x_new)
    improved = active & (loss < loss_min)
    accept = improved | (active & (margin <= 0))
    return (where_examples(accept, x_new, x_best), jnp.where(accept, margin, margin_min),
            jnp.where(improved, loss, loss_min))

  x_best, _, _ = jax.lax.fori_loop(0, num_queries, body, (x_best, margin_min, loss_min))
  return jnp.where(bcast(attack, x), x_best, x)
