"""The train step, parameterised by a loss function, and the evaluation step.

A training method is a `LossFn`:

    loss_fn(params, batch_stats, batch, key) -> (loss, aux)

with `batch = {'image': (B, H, W, C) float32 in [0, 1], 'label': (B,) int32}` (after
standard augmentation), `key` a PRNG key for the method's own randomness, `loss` a
scalar, and `aux` a dict holding `'batch_stats'` (the updated BatchNorm statistics)
and `'metrics'` (a dict of scalars, e.g. accuracy). Adversarial training, AdA,
AugMix-JSD and the rest are such functions; the step and the loop stay the same.

A method with state that persists across steps (ANT: its noise generator, the
generator's optimizer state, a replay buffer of earlier generators) is a
`StatefulLoss`: its loss function also takes and returns the state, which lives in
`TrainState.method_state`, so it is checkpointed, replicated and restored with the rest
of the run, and may have per-epoch hooks that the loop runs (see `StatefulLoss`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from adacorr.core.types import AugmentFn, Batch, LossFn, StatefulLoss
from adacorr.train.state import TrainState


# fold_in tags of the keys that are not a step's (steps are < 2**31 - 2).
_METHOD_INIT_STREAM = 0x7FFFFFFE
_EPOCH_START_STREAM = 0x7FFFFFFF


def method_init_key(rng: jax.Array) -> jax.Array:
  """The key of a stateful method's `init`, from `TrainState.rng`."""
  return jax.random.fold_in(rng, _METHOD_INIT_STREAM)


def epoch_start_key(rng: jax.Array, epoch: Any, index: Any) -> jax.Array:
  """The key of `epoch_start` (index -1) or of extra batch `index` of epoch `epoch`."""
  key = jax.random.fold_in(jax.random.fold_in(rng, _EPOCH_START_STREAM), epoch)
  return jax.random.fold_in(key, jnp.asarray(index, jnp.int32) + 1)


def make_train_step(loss_fn: LossFn | StatefulLoss, tx: optax.GradientTransformation, *,
                    augment_fn: AugmentFn | None = None,
                    schedule: optax.Schedule | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns `train_step(state, batch) -> (state, metrics)` (not yet jitted).

  The step's key is `fold_in(state.rng, state.step)`, split into the augmentation key
  and the loss key. If the loss or a gradient is not finite, the state is returned
  unchanged and `metrics['finite']` is 0: a bad step never reaches the parameters.
  A `StatefulLoss` reads `state.method_state` and its update goes into the new state.
  """
  stateful = isinstance(loss_fn, StatefulLoss)

  def train_step(state: TrainState, batch: Batch):
    step_key = jax.random.fold_in(state.rng, state.step)
    augment_key, loss_key = jax.random.split(step_key)
    if augment_fn is not None:
      batch = dict(batch, image=augment_fn(batch["image"], augment_key))
    if stateful:
      fn = lambda p, bs, b, k: loss_fn.loss_fn(p, bs, b, k, state.method_state)
    else:
      fn = loss_fn
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(
        state.params, state.batch_stats, batch, loss_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=aux["batch_stats"], opt_state=opt_state,
        method_state=aux["method_state"] if stateful else state.method_state)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
               **aux.get("metrics", {})}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics

  return train_step


def make_epoch_start(stateful: StatefulLoss, *, augment_fn: AugmentFn | None = None
                     ) -> tuple[Callable[[TrainState, Any], TrainState],
                                Callable[[TrainState, Batch, Any, Any],
                                         tuple[TrainState, dict[str, jax.Array]]]]:
  """The loop's epoch-start functions for `stateful` (not yet jitted).

  Returns `(begin, step)`: `begin(state, epoch) -> state` runs `stateful.epoch_start`
  (identity if None) and `step(state, batch, epoch, index) -> (state, metrics)` runs
  `stateful.epoch_start_step` on extra batch `index` (augmented with `augment_fn`).
  Both change only `state.method_state`; their keys are `epoch_start_key(state.rng,
  epoch, index)` (index -1 for `begin`).
  """

  def begin(state: TrainState, epoch):
    if stateful.epoch_start is None:
      return state
    key = epoch_start_key(state.rng, epoch, -1)
    return state.replace(method_state=stateful.epoch_start(
        state.params, state.batch_stats, state.method_state, key))

  def step(state: TrainState, batch: Batch, epoch, index):
    augment_key, key = jax.random.split(epoch_start_key(state.rng, epoch, index))
    if augment_fn is not None:
      batch = dict(batch, image=augment_fn(batch["image"], augment_key))
    method_state, metrics = stateful.epoch_start_step(
        state.params, state.batch_stats, state.method_state, batch, key)
    return state.replace(method_state=method_state), metrics

  return begin, step


def make_eval_step(model: nn.Module, *, preprocess: Callable[[jax.Array], jax.Array] | None = None
                   ) -> Callable[[dict[str, Any], Batch], dict[str, jax.Array]]:
  """Returns `eval_step(variables, batch) -> sums` over the real (mask=1) examples.

  `preprocess(images) -> images` (e.g. a center crop) runs before the model. The sums
  (`loss`, `correct`, `count`) add up over batches; divide by `count`.
  """

  def eval_step(variables, batch):
    images = batch["image"] if preprocess is None else preprocess(batch["image"])
    logits = model.apply(variables, images, train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}

  return eval_step
