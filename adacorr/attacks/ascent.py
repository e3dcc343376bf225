"""The shared parts of the gradient-ascent attacks: loss x update x project, over pytrees.

In the spirit of DeepMind's `adversarial_robustness/jax/attacks.py`, an attack is a loop
over four parts, each a small pure function:

  init      the first iterate (clean point, random start: the attack's own choice)
  loss      `loss(it) -> (total, per_example)`: the scalar whose gradient is followed
            and, to keep the best iterate, each example's objective (B,) (else None)
  update    `update(it, grad) -> it`, e.g. `it + step_size * sign(grad)` (`signed_step`)
  project   `project(it) -> it`, back into the threat model (ball, box, block radii)

`ascend` runs `it <- project(update(it, grad total(it)))` for `num_steps` steps. An
iterate is any pytree: images (PGD, FGSM/FGM, the training attacks of AT and
RobustAugMix) or per-example weight perturbations (AdA). Configurations built on it:
`lp.pgd` / `lp.fgsm` / `lp.fgm`, `methods.adversarial_training.input_attack` (AT,
RobustAugMix) and `adversarial_augment.ada`. APGD, LPA and PPGD have step-size
schedules, Lagrange multipliers or projections inside the step, and keep their own loops
(sharing the checks of `adacorr.core.checks`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from adacorr.core.canonical_conv import canonical_convs
from adacorr.core.tree import TINY, bcast, per_example_l2

PyTree = Any
Update = Callable[[PyTree, PyTree], PyTree]
Project = Callable[[PyTree], PyTree]


# --------------------------------------------------------------------------- directions


def sign_direction(grad: PyTree) -> PyTree:
  """`sign(g)` per leaf: the steepest l_inf ascent direction (cast to each leaf's dtype)."""
  return jax.tree.map(lambda g: jnp.sign(g).astype(g.dtype), grad)


def l2_direction(grad: PyTree) -> PyTree:
  """`g / ||g||_2` per example of each leaf (B, ...): the steepest l2 ascent direction.

  Examples with g = 0 stay 0 (the norm is floored at `TINY`).
  """
  return jax.tree.map(lambda g: g / bcast(jnp.maximum(per_example_l2(g), TINY), g), grad)


DIRECTIONS = {"linf": sign_direction, "l2": l2_direction}


def signed_step(step_size, direction: Callable[[PyTree], PyTree] = sign_direction) -> Update:
  """The update `it + step_size * direction(grad)`, leaf by leaf (`step_size` may be traced)."""

  def update(it, grad):
    return jax.tree.map(lambda i, d: i + (step_size * d).astype(i.dtype), it, direction(grad))

  return update


# --------------------------------------------------------------------------- the loop


def greater(obj, best_obj):
  """Per example, whether `obj` ranks above `best_obj` (B,) bool.

  Objectives are (B,) arrays, or tuples of (B,) arrays compared lexicographically (the
  first entry decides unless tied, e.g. `(success, margin or loss)`: any successful
  iterate beats every unsuccessful one).
  """
  if not isinstance(obj, tuple):
    return obj > best_obj
  out = jnp.zeros(jnp.shape(obj[0]), bool)
  tied = jnp.ones(jnp.shape(obj[0]), bool)
  for a, b in zip(obj, best_obj):
    out = out | (tied & (a > b))
    tied = tied & (a == b)
  return out


def keep_better(obj, best_obj, it, best_it):
  """Per example, `it` where `obj` ranks above `best_obj` (`greater`), else `best_it`:
  `(best_it, best_obj)`.

  `obj`, `best_obj`: (B,) objectives or tuples of them (lexicographic); `it`, `best_it`:
  pytrees of (B, ...) leaves. Ties keep `best_it` (the earlier iterate or restart).
  """
  better = greater(obj, best_obj)
  best_it = jax.tree.map(lambda a, b: jnp.where(bcast(better, a), a, b), it, best_it)
  return best_it, jax.tree.map(lambda a, b: jnp.where(better, a, b), obj, best_obj)


def _in_loop(grad_fn: Callable) -> Callable:
  """`grad_fn` as the loop body evaluates it: on XLA:CPU with every convolution's kernel in
  canonical HWIO order (`core.canonical_conv`), since inside a `while` body XLA:CPU runs
  the gradient's transposed-kernel convolutions on a slow path (measured 8x per AdA
  attack on the suite's PreActResNet, `benchmarks/ada_step.py`); the same arithmetic.
  Other backends: unchanged."""
  return canonical_convs(grad_fn) if jax.default_backend() == "cpu" else grad_fn


def ascend(loss: Callable[[PyTree], Any], init: PyTree, *, num_steps: int, update: Update,
           project: Project, track_best: bool = False, unroll: bool = False):
  """Projected gradient ascent: `it <- project(update(it, grad total(it)))`, `num_steps` times.

  Args:
    loss: `it -> (total, per_example)`: `total` the scalar to maximise, `per_example`
      (B,) the objective of each example, or a tuple of them ranked lexicographically
      (`greater`); needed with `track_best`, else may be None.
    init: the first iterate (a pytree, already in the threat model).
    num_steps: steps (a static Python int >= 0).
    update: `(it, grad) -> it`, e.g. `signed_step(step_size)`.
    project: `it -> it` into the threat model (identity: `lambda it: it`).
    track_best: also evaluate the last iterate and return, per example, the iterate of
      the highest per-example objective among all `num_steps + 1` iterates (the first
      one wins ties), with that objective: `(best_it, best_obj)`.
    unroll: a Python loop (the steps inlined into the program: best for a few steps
      inside a training step) instead of `jax.lax.fori_loop`.

  Returns:
    The last iterate, or with `track_best` `(best_it, best_obj (B,))`.
  """
  def loop(body, carry):
    if unroll:
      for i in range(int(num_steps)):
        carry = body(i, carry)
      return carry
    return jax.lax.fori_loop(0, num_steps, body, carry) if num_steps else carry

  if not track_best:
    grad_fn = _in_loop(jax.grad(loss, has_aux=True))
    return loop(lambda _, it: project(update(it, grad_fn(it)[0])), init)

  value_and_grad = _in_loop(jax.value_and_grad(loss, has_aux=True))

  def tracked(_, carry):
    it, best_it, best_obj = carry
    (_, obj), g = value_and_grad(it)
    best_it, best_obj = keep_better(obj, best_obj, it, best_it)
    return project(update(it, g)), best_it, best_obj

  lowest = jax.tree.map(lambda a: jnp.full(a.shape, -jnp.inf, jnp.float32),
                        jax.eval_shape(loss, init)[1])
  it, best_it, best_obj = loop(tracked, (init, init, lowest))
  _, obj = loss(it)
  return keep_better(obj, best_obj, it, best_it)
