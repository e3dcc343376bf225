"""The types every layer shares: a batch, a training method's loss, a stateful method.

A training method is a `LossFn`:

    loss_fn(params, batch_stats, batch, key) -> (loss, aux)

with `batch = {'image': (B, H, W, C) float32 in [0, 1], 'label': (B,) int32}` (after
standard augmentation), `key` a PRNG key for the method's own randomness, `loss` a
scalar, and `aux` a dict holding `'batch_stats'` (the updated BatchNorm statistics)
and `'metrics'` (a dict of scalars, e.g. accuracy). A method with state carried from
step to step (ANT) is a `StatefulLoss`. The engine (`adacorr.train`) runs both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

PyTree = Any
Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, dict[str, Any]]]
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class StatefulLoss:
  """A training method with state carried from step to step (`adacorr.train.TrainState.method_state`).

  Attributes:
    loss_fn: `loss_fn(params, batch_stats, batch, key, method_state) -> (loss, aux)`,
      a `LossFn` that also reads the method state; `aux['method_state']` is the new
      state (not differentiated: `stop_gradient` whatever depends on `params`).
    init: `init(key, image_shape) -> method_state`, a pytree of arrays; `image_shape`
      is (H, W, C) of one training image.
    epoch_start: optional `epoch_start(params, batch_stats, method_state, key) ->
      method_state`, run (jitted) by the loop before the first step of every epoch, the
      first included (e.g. ANT starts a new generator, pretrained on the extra batches).
    epoch_start_step: optional `epoch_start_step(params, batch_stats, method_state,
      batch, key) -> (method_state, metrics)`, run (jitted) after `epoch_start` on each
      of `epoch_start_steps` extra batches (augmented like the training batches): the
      batches of global steps `e * steps_per_epoch + i`, i < epoch_start_steps, so
      a pure function of the seed and e (ANT pretrains the new generator on them).
    epoch_start_steps: number of extra batches per epoch start (0: none).

  The keys depend only on the run's seed and (epoch, i), and the state is checkpointed
  between steps, so a run killed at any point and resumed equals an unbroken one.
  """
  loss_fn: Callable[..., tuple[jax.Array, dict[str, Any]]]
  init: Callable[[jax.Array, tuple[int, ...]], Any]
  epoch_start: Callable[..., Any] | None = None
  epoch_start_step: Callable[..., tuple[Any, dict[str, jax.Array]]] | None = None
  epoch_start_steps: int = 0

  def __post_init__(self):
    steps = self.epoch_start_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
      raise ValueError(f"epoch_start_steps must be a non-negative int, got {steps!r}.")
    if steps > 0 and self.epoch_start_step is None:
      raise ValueError(f"epoch_start_steps={steps} needs an epoch_start_step function.")

  @property
  def has_epoch_start(self) -> bool:
    return self.epoch_start is not None or self.epoch_start_steps > 0
