"""Optimizer and learning-rate schedules (optax), configured by an ml_collections config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import optax

if TYPE_CHECKING:  # configs are ml_collections.ConfigDicts; any attribute object works
  import ml_collections

SCHEDULES = ("cosine", "piecewise", "constant")


def scaled_learning_rate(base_lr: float, global_batch_size: int) -> float:
  """The linear scaling rule as in the AdA paper: `max(base_lr * batch / 256, base_lr)`."""
  return max(base_lr * global_batch_size / 256, base_lr)


def make_schedule(config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  num_steps: int) -> optax.Schedule:
  """The learning rate as a function of the step.

  Config fields: `learning_rate`, `scale_learning_rate` (bool, linear scaling rule),
  `global_batch_size`, `schedule` in SCHEDULES, `warmup_epochs` (linear warm-up from 0,
  all schedules), `piecewise_boundaries` (fractions of training) and
  `piecewise_factor` (multiplier at each boundary).
  """
  peak = config.learning_rate
  if config.scale_learning_rate:
    peak = scaled_learning_rate(peak, config.global_batch_size)
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), num_steps)
  if config.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, decay_steps=max(num_steps - warmup, 1))
  elif config.schedule == "piecewise":
    boundaries = {int(round(f * num_steps)) - warmup: config.piecewise_factor
                  for f in config.piecewise_boundaries}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  elif config.schedule == "constant":
    main = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.schedule={config.schedule!r} is not one of {SCHEDULES}.")
  if warmup == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], boundaries=[warmup])


def _decay_mask(params, which: str):
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  if which == "kernels":  # conv/dense kernels only: no biases, no BatchNorm scales
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
  raise ValueError(f"config.weight_decay_on={which!r} is not 'all' or 'kernels'.")


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and coupled L2 weight decay, as `torch.optim.SGD`.

  Config fields: `momentum`, `nesterov`, `weight_decay`, `weight_decay_on`
  ('all' parameters, as the reference PyTorch code, or 'kernels'), `clip_grad_value`
  (> 0: clip every gradient element to [-v, v] before weight decay, like
  `torch.nn.utils.clip_grad_value_`; PAT's reference uses 1.0).
  """
  which = config.get("weight_decay_on", "all")
  clip = float(config.get("clip_grad_value", 0.0) or 0.0)
  return optax.chain(
      *([optax.clip(clip)] if clip > 0 else []),
      optax.add_decayed_weights(config.weight_decay, mask=lambda p: _decay_mask(p, which)),
      optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
