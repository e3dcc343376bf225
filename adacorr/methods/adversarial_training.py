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
(`model.train()` throughout), and, as there, every attack pass updates the BatchNorm
running statistics: the training pass starts from the statistics the attack's passes left
(`attack_bn_stats='update'`, the default; PyTorch updates `running_mean/var` in every
train-mode forward). `attack_bn_stats='discard'` (our earlier default) keeps only the
training pass's update. The adversarial images are `stop_gradient`-ed, so no parameter
gradient flows through the attack.

`fraction` of the batch is perturbed: the FIRST `round(fraction * B)` examples (the
reference zeroes the perturbation of the first `int((1 - f) * B)` and perturbs the rest;
for shuffled batches the two are equivalent). The attack gradient is computed on the
whole batch (BatchNorm couples the examples) and then masked.

The single-step/PGD attack is a configuration of `adacorr.attacks.ascent.ascend` with the
reference's own update and projection (not `attacks.pgd`): its l2 step (step 0.5, clip,
then project onto the eps-ball) is not a plain FGM with step eps, and the training PGD
returns the last iterate without best tracking.

Checked against the reference code (tml-epfl/adv-training-corruptions `train.py`,
`utils.py` (`attack_pgd_training`, `get_uniform_delta`, `get_lr_schedule`), `data.py`,
`models.py`) for choices the paper does not state:
  - BatchNorm during the attack: train mode, running statistics updated by the attack's
    passes too. Ours before: train mode, attack updates discarded. CHANGED: the
    reference's is the default (`attack_bn_stats='update'`), ours `'discard'`.
  - Start: zero (`--attack_init zero`), same. Random start (`random_init`): l_inf uniform
    in [-eps, eps], same; l2 a Gaussian direction with ONE radius `np.random.uniform(0,
    eps)` for the whole batch. Ours before: a radius per example. CHANGED: the
    reference's is the default (`random_radius='batch'`), ours `'example'`.
  - Order of clipping and projection: l2 step, clip to [0, 1], then eps-ball projection;
    l_inf step, clip to [0, 1], clip to [-eps, eps] (we clip to the ball before the box
    as well: the same point, as both sets contain 0). Same.
  - Gradient: of the batch-mean CE at `clamp(x + delta, 0, 1)` (so the clip's gradient
    enters); l2 normalisation `g / ||g||` with no floor (`--normreg 0`; ours floors the
    norm at 1e-12 for zero gradients). Same.
  - Step sizes: FGSM `fgsm_alpha * eps` = eps; l2 `--pgd_alpha_train 0.5`; no early
    stopping; the training PGD returns its last iterate. Same. The paper's PGD-10 runs
    (eps 8/255, 10/255) do not record their l_inf `--pgd_alpha_train` (its default 0.5
    would jump to the ball's corners every step); ours suggests eps/4, the reference's
    evaluation PGD step (`args.pgd_alpha = eps / 4`).
  - Perturbed fraction (`--batch-part`): the first `int((1 - f) B)` examples of a
    shuffled batch stay clean; ours perturbs the first `round(f B)`. Equivalent.
  - Loss: CE on the (partly) perturbed batch only, no clean term. Same.
  Optimisation (reported, set by the configs): SGD momentum 0.9 (no Nesterov), weight
  decay 5e-4 on every parameter, lr 0.1 piecewise (/10 at 34% and 67% of training, set
  per iteration), batch 128 with `drop_last`, 150 epochs (`--epochs=150` in the README),
  pad-4 crop + flip, PreActResNet-18 with normalisation inside; the reference also keeps
  the checkpoint of the best test error on 1,024 test points and writes the CIFAR-10-C
  table of that 'best' model next to the last one's.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

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
# The l2 ball start's radius U(0, eps): one for the whole batch (l_p AT's reference,
# `np.random.uniform(0, eps)`) or one per example (ours before).
RANDOM_RADII = ("batch", "example")
# The order of the box clip and the eps-ball projection in a step: 'clip_project' (l_p AT's
# reference: the iterate is delta; clip x + delta to [0, 1], then project delta) or
# 'project_clip' (RobustAugMix's author's `pgd_l2_attack`: the iterate is the image,
# started at clip(x + delta_0); project x_adv - x onto the ball, then clip to [0, 1]).
ORDERS = ("clip_project", "project_clip")
# Whether the attack's train-mode passes update BatchNorm's running statistics (the
# PyTorch references, 'update') or only the training pass does ('discard').
ATTACK_BN_STATS = ("update", "discard")


def _reference_l2(v: jax.Array) -> jax.Array:
  """Per-example l2 norm (B, 1, ..., 1) as the reference computes it (a keepdims sum).

  Numerically the same as `core.tree.per_example_l2`, but XLA fuses the two forms
  differently inside the l2 step, so results would move in the last bits; this form
  keeps l2 AT and RobustAugMix bit-identical to their earlier runs.
  """
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def _ball_projection(norm: str, eps: float):
  """`d -> d` projected onto the eps-ball of `norm` (per example)."""
  if norm == "linf":
    return lambda d: jnp.clip(d, -eps, eps)
  if eps <= 0:
    return jnp.zeros_like
  return lambda d: d * eps / jnp.maximum(_reference_l2(d), eps)


def _random_delta(key: jax.Array, x: jax.Array, norm: str, eps: float, random_start: str,
                  random_radius: str) -> jax.Array:
  """The random start delta_0 (not clipped to the image box)."""
  if random_start == "sphere":
    d = jax.random.normal(jax.random.split(key)[0], x.shape, x.dtype)
    if norm == "linf":
      n = jnp.max(jnp.abs(d), axis=tuple(range(1, d.ndim)), keepdims=True)
    else:
      n = _reference_l2(d)
    return d * eps / jnp.maximum(n, TINY)
  if norm == "linf":
    return jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
  k1, k2 = jax.random.split(key)
  d = jax.random.normal(k1, x.shape, x.dtype)
  radius_shape = (1 if random_radius == "batch" else x.shape[0],) + (1,) * (x.ndim - 1)
  r = jax.random.uniform(k2, radius_shape, x.dtype, 0.0, eps)
  return d * r / jnp.maximum(_reference_l2(d), TINY)


def input_attack(logits_fn: Callable, x: jax.Array, y: jax.Array,
                 key: jax.Array | None = None, *, norm: str, eps: float, step_size: float,
                 num_steps: int = 1, random_init: bool = False,
                 random_start: str = "ball", random_radius: str = "batch",
                 order: str = "clip_project", state: Any = None):
  """The reference's training attack; returns `x_adv` in [0, 1] (not stop-gradient-ed).

  Args:
    logits_fn: images (B, H, W, C) -> logits (B, K); with `state`, `(images, state) ->
      (logits, new state)`.
    x: clean images in [0, 1]; y: (B,) int labels.
    key: PRNG key, needed only with `random_init`.
    norm: 'linf' or 'l2'. eps: radius. step_size: step per iteration.
    num_steps: iterations (1 = FGSM / FGM). random_init: start from a random point
      instead of zero, drawn as `random_start` says.
    random_start: with `random_init`, 'ball' (the default, l_p AT's reference start):
      uniform in [-eps, eps] per pixel (linf) or a random Gaussian direction with radius
      U(0, eps) (l2; `random_radius`); 'sphere' (RobustAugMix's author's code): a random
      Gaussian direction scaled onto the eps-sphere of the norm, ||delta_0||_p = eps
      per example (linf: the direction divided by its max-abs entry, times eps).
      Ignored without `random_init`.
    random_radius: the l2 'ball' start's radius: 'batch' (the default, l_p AT's
      reference: one `np.random.uniform(0, eps)` for the whole batch) or 'example' (one
      per example).
    order: 'clip_project' (the default, l_p AT's reference: the iterate is delta, the
      forward pass sees `clip(x + delta)`, a step is followed by the clip to [0, 1] and
      then the eps-ball projection; a random start is not clipped) or 'project_clip'
      (RobustAugMix's author's `pgd_l2_attack`: the iterate is the image, starting at
      `clip(x + delta_0)`; the gradient is taken w.r.t. the image itself, a step is
      followed by the projection of `x_adv - x` onto the ball, then the clip).
    state: None, or the initial value of a state the attack's forward passes thread
      through `logits_fn` (e.g. BatchNorm statistics that every train-mode pass updates,
      as PyTorch's running statistics); then returns `(x_adv, final state)`.
  """
  check_attack_args(norm, eps, step_size, num_steps)
  if random_start not in RANDOM_STARTS:
    raise ValueError(f"random_start must be one of {RANDOM_STARTS}, got {random_start!r}.")
  if random_radius not in RANDOM_RADII:
    raise ValueError(f"random_radius must be one of {RANDOM_RADII}, got {random_radius!r}.")
  if order not in ORDERS:
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
  if random_init:
    if key is None:
      raise ValueError("random_init=True needs a PRNG key.")
    delta = _random_delta(key, x, norm, eps, random_start, random_radius)
  else:
    delta = jnp.zeros_like(x)
  ball = _ball_projection(norm, eps)

  if norm == "linf":
    update = ascent.signed_step(step_size)
  else:
    def update(d, g):  # the reference's order of operations: (step * g) / ||g||
      return d + step_size * g / jnp.maximum(_reference_l2(g), TINY)

  if order == "clip_project":
    # The reference does not clip a random start; the forward pass clips.
    to_image = lambda d: jnp.clip(x + d, 0.0, 1.0)  # noqa: E731

    def project(d):
      if norm == "linf":
        d = jnp.clip(d, -eps, eps)
      return ball(jnp.clip(x + d, 0.0, 1.0) - x)

    it = delta
  else:
    to_image = lambda a: a  # noqa: E731

    def project(a):
      return jnp.clip(x + ball(a - x), 0.0, 1.0)

    it = jnp.clip(x + delta, 0.0, 1.0)

  if state is None:
    def loss(i):
      return cross_entropy(logits_fn(to_image(i)), y), None

    # `num_steps` is static and small: unrolled, so XLA optimises the attack with the
    # rest of the step (a while loop around one FGSM/FGM step cost ~2x the nominal step
    # on CPU).
    it = ascent.ascend(loss, it, num_steps=int(num_steps), update=update, project=project,
                       unroll=True)
    return to_image(it)

  def loss_with_state(i, s):
    logits, s = logits_fn(to_image(i), s)
    return cross_entropy(logits, y), jax.lax.stop_gradient(s)

  grad_fn = jax.grad(loss_with_state, has_aux=True)
  for _ in range(int(num_steps)):  # unrolled, as above
    g, state = grad_fn(it, state)
    it = project(update(it, g))
  return to_image(it), state


def check_attack_bn_stats(value: str) -> str:
  """`value` if it is one of `ATTACK_BN_STATS`, else a ValueError naming `attack_bn_stats`."""
  if value not in ATTACK_BN_STATS:
    raise ValueError(f"attack_bn_stats must be one of {ATTACK_BN_STATS}, got {value!r}.")
  return value


def adversarial_batch(model: nn.Module, params, batch_stats, batch: Mapping[str, jax.Array],
                      key: jax.Array, *, norm: str, eps: float, step_size: float,
                      num_steps: int = 1, random_init: bool = False,
                      random_radius: str = "batch", fraction: float = 1.0,
                      return_batch_stats: bool = False):
  """The images AT trains on: the first `round(fraction * B)` attacked, the rest clean.

  The attack uses train-mode BatchNorm and no gradient flows back from the result into
  `params`. Returns the images, or with `return_batch_stats` `(images, batch_stats after
  the attack's passes)`: each of its `num_steps` train-mode passes updates the running
  statistics in turn, as the reference's PyTorch passes do (`attack_bn_stats='update'`
  trains from them; without `return_batch_stats` they are dropped).
  """
  x, y = batch["image"], batch["label"]
  attack_key, dropout_key = jax.random.split(key)
  frozen = jax.lax.stop_gradient(params)

  def logits_fn(images, stats):
    return train_apply(model, frozen, stats, images, dropout_key)

  kw = dict(norm=norm, eps=eps, step_size=step_size, num_steps=num_steps,
            random_init=random_init, random_radius=random_radius)
  if return_batch_stats:
    x_adv, new_stats = input_attack(logits_fn, x, y, attack_key, state=batch_stats, **kw)
  else:
    x_adv = input_attack(lambda images: logits_fn(images, batch_stats)[0], x, y, attack_key,
                         **kw)
  x_adv = jax.lax.stop_gradient(where_examples(perturbed_mask(fraction, x.shape[0]), x_adv, x))
  return (x_adv, new_stats) if return_batch_stats else x_adv


# ---------------------------------------------------------------------------------------
# Factories.


def make_adversarial_training(model: nn.Module, *, norm: str = "linf",
                              eps: float = 1.0 / 255, step_size: float | None = None,
                              num_steps: int = 1, random_init: bool = False,
                              random_radius: str = "batch", fraction: float = 1.0,
                              attack_bn_stats: str = "update"):
  """l_p AT. `step_size=None` means eps (linf) or 0.5 (l2), the reference defaults.

  `random_radius`: the l2 random start's radius, one per batch ('batch', the reference)
  or per example ('example'); see `input_attack`. `attack_bn_stats`: 'update' (default,
  the reference): the attack's train-mode passes update the BatchNorm running statistics
  and the training pass starts from them (PyTorch updates them in every train-mode
  forward); 'discard': only the training pass updates them (ours before).

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
  if random_radius not in RANDOM_RADII:
    raise ValueError(f"random_radius must be one of {RANDOM_RADII}, got {random_radius!r}.")
  update_stats = check_attack_bn_stats(attack_bn_stats) == "update"

  def loss_fn(params, batch_stats, batch, key):
    attack_key, dropout_key = jax.random.split(key)
    x, y = batch["image"], batch["label"]
    x_train = adversarial_batch(model, params, batch_stats, batch, attack_key, norm=norm,
                                eps=eps, step_size=step_size, num_steps=num_steps,
                                random_init=random_init, random_radius=random_radius,
                                fraction=fraction, return_batch_stats=update_stats)
    if update_stats:
      x_train, batch_stats = x_train
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
                 random_init: bool = False, fraction: float = 1.0,
                 attack_bn_stats: str = "update"):
  """l_inf AT; defaults: FGSM, eps 1/255, zero init, whole batch. PGD-k: `num_steps=k`.
  `attack_bn_stats` as `make_adversarial_training`."""
  return make_adversarial_training(model, norm="linf", eps=eps, step_size=step_size,
                                   num_steps=num_steps, random_init=random_init,
                                   fraction=fraction, attack_bn_stats=attack_bn_stats)


def make_l2_at(model: nn.Module, *, eps: float = 0.1,
               step_size: float = 0.5, num_steps: int = 1, random_init: bool = False,
               random_radius: str = "batch", fraction: float = 1.0,
               attack_bn_stats: str = "update"):
  """l2 AT; defaults: FGM step 0.5, clip to [0, 1], project onto eps=0.1 ball, zero init.
  `random_radius`, `attack_bn_stats` as `make_adversarial_training`."""
  return make_adversarial_training(model, norm="l2", eps=eps, step_size=step_size,
                                   num_steps=num_steps, random_init=random_init,
                                   random_radius=random_radius, fraction=fraction,
                                   attack_bn_stats=attack_bn_stats)
