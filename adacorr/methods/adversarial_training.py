"""l_p adversarial training (Kireev et al. 2022, "On the effectiveness of adversarial
training against common corruptions"), as a `LossFn` factory.

Follows the reference code (tml-epfl/adv-training-corruptions, `train.py` and
`utils.attack_pgd_training`):

* l_inf (`norm='linf'`): zero init (or uniform in [-eps, eps] with `random_init`),
  `num_steps` steps of `delta <- clip(delta + step_size * sign(g), -eps, eps)`, then
  `delta <- clip(x + delta, 0, 1) - x`. The defaults (eps 1/255, one step of size eps)
  are FGSM AT; `num_steps=10, step_size=eps/4` gives PGD-10 AT.
* l2 (`norm='l2'`): zero init, `delta <- delta + step_size * g / ||g||`, clip `x + delta`
  to [0, 1], project `delta` onto the eps-ball: `delta * eps / max(eps, ||delta||)`.
  The defaults (eps 0.1, one step of size 0.5) are the paper's l2 AT (FGM).

`g` is the gradient of the batch-mean cross-entropy w.r.t. the input. The attack runs
with the model in TRAIN mode (BatchNorm uses batch statistics), as in the reference
(`model.train()` throughout), but its BatchNorm statistic updates are discarded: only the
final training pass updates `batch_stats` (the PyTorch reference updates the running
statistics in both passes). The adversarial images are `stop_gradient`-ed, so no
parameter gradient flows through the attack.

`fraction` of the batch is perturbed: the FIRST `round(fraction * B)` examples (the
reference zeroes the perturbation of the first `int((1 - f) * B)` and perturbs the rest;
for shuffled batches the two are equivalent). The attack gradient is computed on the
whole batch (BatchNorm couples the examples) and then masked.

The single-step/PGD attack is a configuration of `adacorr.attacks.ascent.ascend` with the
reference's own update and projection (not `attacks.pgd`): its l2 step (step 0.5, clip,
then project onto the eps-ball) is not a plain FGM with step eps, and the training PGD
returns the last iterate without best tracking.
"""

from __future__ import annotations

from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.core.radius import as_radius
from adacorr.attacks import ascent
from adacorr.methods.common import (
    TINY, accuracy, check_attack_args, check_fraction, check_norm, cross_entropy,
    per_example_l2, perturbed_mask, train_apply, where_examples)

# ---------------------------------------------------------------------------------------
# The attack.

# How `input_attack` draws a random start: inside the eps-ball (l_p AT's reference) or on
# the eps-sphere (RobustAugMix's author's code).
RANDOM_STARTS = ("ball", "sphere")


def _reference_l2(v: jax.Array) -> jax.Array:
  """Per-example l2 norm (B, 1, ..., 1) as the reference computes it (a keepdims sum).

  Numerically the same as `core.tree.per_example_l2`, but XLA fuses the two forms
  differently inside the l2 step, so results would move in the last bits; this form
  keeps l2 AT and RobustAugMix bit-identical to their earlier runs.
  """
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def input_attack(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
                 key: jax.Array | None = None, *, norm: str, eps: float, step_size: float,
                 num_steps: int = 1, random_init: bool = False,
                 random_start: str = "ball") -> jax.Array:
  """The reference's training attack; returns `x_adv` in [0, 1] (not stop-gradient-ed).

  Args:
    logits_fn: images (B, H, W, C) -> logits (B, K).
    x: clean images in [0, 1]; y: (B,) int labels.
    key: PRNG key, needed only with `random_init`.
    norm: 'linf' or 'l2'. eps: radius. step_size: step per iteration.
    num_steps: iterations (1 = FGSM / FGM). random_init: start from a random point
      instead of zero, drawn as `random_start` says.
    random_start: with `random_init`, 'ball' (the default, l_p AT's reference start):
      uniform in [-eps, eps] per pixel (linf) or a random Gaussian direction with radius
      U(0, eps) per example (l2); 'sphere' (RobustAugMix's author's code): a random
      Gaussian direction scaled onto the eps-sphere of the norm, ||delta_0||_p = eps
      per example (linf: the direction divided by its max-abs entry, times eps).
      Ignored without `random_init`.
  """
  check_attack_args(norm, eps, step_size, num_steps)
  if random_start not in RANDOM_STARTS:
    raise ValueError(f"random_start must be one of {RANDOM_STARTS}, got {random_start!r}.")
  if random_init:
    if key is None:
      raise ValueError("random_init=True needs a PRNG key.")
    if random_start == "sphere":
      d = jax.random.normal(jax.random.split(key)[0], x.shape, x.dtype)
      if norm == "linf":
        n = jnp.max(jnp.abs(d), axis=tuple(range(1, d.ndim)), keepdims=True)
      else:
        n = _reference_l2(d)
      delta = d * eps / jnp.maximum(n, TINY)
    elif norm == "linf":
      delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    else:
      k1, k2 = jax.random.split(key)
      d = jax.random.normal(k1, x.shape, x.dtype)
      r = jax.random.uniform(k2, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype, 0.0, eps)
      delta = d * r / jnp.maximum(_reference_l2(d), TINY)
    # The reference does not clip a random start; the forward pass below clips.
  else:
    delta = jnp.zeros_like(x)

  def loss(d):
    return cross_entropy(logits_fn(jnp.clip(x + d, 0.0, 1.0)), y), None

  if norm == "linf":
    update = ascent.signed_step(step_size)

    def project(d):
      d = jnp.clip(d, -eps, eps)
      d = jnp.clip(x + d, 0.0, 1.0) - x
      return jnp.clip(d, -eps, eps)
  else:
    def update(d, g):  # the reference's order of operations: (step * g) / ||g||
      return d + step_size * g / jnp.maximum(_reference_l2(g), TINY)

    def project(d):
      d = jnp.clip(x + d, 0.0, 1.0) - x
      n = _reference_l2(d)
      return d * eps / jnp.maximum(n, eps) if eps > 0 else jnp.zeros_like(d)

  # `num_steps` is static and small: unrolled, so XLA optimises the attack with the rest of
  # the step (a while loop around one FGSM/FGM step cost ~2x the nominal step on CPU).
  delta = ascent.ascend(loss, delta, num_steps=int(num_steps), update=update,
                        project=project, unroll=True)
  return jnp.clip(x + delta, 0.0, 1.0)


def adversarial_batch(model: nn.Module, params, batch_stats, batch: Mapping[str, jax.Array],
                      key: jax.Array, *, norm: str, eps: float, step_size: float,
                      num_steps: int = 1, random_init: bool = False,
                      fraction: float = 1.0) -> jax.Array:
  """The images AT trains on: the first `round(fraction * B)` attacked, the rest clean.

  The attack uses train-mode BatchNorm (its statistic updates are discarded) and no
  gradient flows back from the result into `params`.
  """
  x, y = batch["image"], batch["label"]
  attack_key, dropout_key = jax.random.split(key)
  frozen = jax.lax.stop_gradient(params)

  def logits_fn(images):
    return train_apply(model, frozen, batch_stats, images, dropout_key)[0]

  x_adv = input_attack(logits_fn, x, y, attack_key, norm=norm, eps=eps,
                       step_size=step_size, num_steps=num_steps, random_init=random_init)
  x_adv = where_examples(perturbed_mask(fraction, x.shape[0]), x_adv, x)
  return jax.lax.stop_gradient(x_adv)


# ---------------------------------------------------------------------------------------
# Factories.


def make_adversarial_training(model: nn.Module, *, norm: str = "linf",
                              eps: float = 1.0 / 255, step_size: float | None = None,
                              num_steps: int = 1, random_init: bool = False,
                              fraction: float = 1.0):
  """l_p AT. `step_size=None` means eps (linf) or 0.5 (l2), the reference defaults.

  The LossFn's metrics: 'accuracy' (on the trained-on batch), 'perturbation_norm' (mean l2 norm of
  the input perturbation over the perturbed examples) and 'perturbation_linf' (max abs).
  """
  check_norm(norm)
  eps, num_steps = float(as_radius(eps)), int(num_steps)
  random_init, fraction = bool(random_init), float(fraction)
  if step_size is None:
    step_size = eps if norm == "linf" else 0.5
  step_size = float(step_size)
  check_attack_args(norm, eps, step_size, num_steps)
  check_fraction(fraction)

  def loss_fn(params, batch_stats, batch, key):
    attack_key, dropout_key = jax.random.split(key)
    x, y = batch["image"], batch["label"]
    x_train = adversarial_batch(model, params, batch_stats, batch, attack_key, norm=norm,
                                eps=eps, step_size=step_size, num_steps=num_steps,
                                random_init=random_init, fraction=fraction)
    logits, new_stats = train_apply(model, params, batch_stats, x_train, dropout_key)
    loss = cross_entropy(logits, y)
    mask = perturbed_mask(fraction, x.shape[0])
    n = jnp.maximum(jnp.sum(mask), 1)
    delta = x_train - x
    metrics = {
        "accuracy": accuracy(logits, y),
        "perturbation_norm": jnp.sum(jnp.where(mask, per_example_l2(delta), 0.0)) / n,
        "perturbation_linf": jnp.max(jnp.abs(delta)),
    }
    return loss, {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn


def make_linf_at(model: nn.Module, *, eps: float = 1.0 / 255,
                 step_size: float | None = None, num_steps: int = 1,
                 random_init: bool = False, fraction: float = 1.0):
  """l_inf AT; defaults: FGSM, eps 1/255, zero init, whole batch. PGD-k: `num_steps=k`."""
  return make_adversarial_training(model, norm="linf", eps=eps, step_size=step_size,
                                   num_steps=num_steps, random_init=random_init,
                                   fraction=fraction)


def make_l2_at(model: nn.Module, *, eps: float = 0.1,
               step_size: float = 0.5, num_steps: int = 1, random_init: bool = False,
               fraction: float = 1.0):
  """l2 AT; defaults: FGM step 0.5, clip to [0, 1], project onto eps=0.1 ball, zero init."""
  return make_adversarial_training(model, norm="l2", eps=eps, step_size=step_size,
                                   num_steps=num_steps, random_init=random_init,
                                   fraction=fraction)
