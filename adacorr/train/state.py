"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Pure data (no functions), so it checkpoints and shards as one pytree.

  Attributes:
    step: int32 scalar, number of optimizer updates applied so far.
    params: the model's 'params' collection.
    batch_stats: the model's 'batch_stats' collection ({} for models without BatchNorm).
    opt_state: the optax state.
    rng: raw uint32 PRNG key (shape (2,)); the key of step `s` is `fold_in(rng, s)`,
      so the randomness of a step depends only on the seed and the step.
    method_state: what a stateful training method carries from step to step (e.g.
      ANT's noise generator, its optimizer state and replay buffer; see
      `adacorr.train.step.StatefulLoss`), a pytree of arrays; {} for the others.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  method_state: Any = flax.struct.field(default_factory=dict)

  @property
  def variables(self) -> dict[str, Any]:
    """`{'params', 'batch_stats'}` for `model.apply`."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       key: jax.Array, image_shape: tuple[int, int, int],
                       method_state: Any = None) -> TrainState:
  """Initialises the model on a (1, H, W, C) dummy input and the optimizer state.

  `method_state`: a stateful method's initial state (default {}).
  """
  init_key, state_key = jax.random.split(key)
  # Jitted: eager init compiles one random sampler per parameter shape.
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(init_key, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      rng=state_key,
      method_state={} if method_state is None else method_state)
