"""Nominal training: softmax cross-entropy on the (standard-augmented) batch."""

from __future__ import annotations

import flax.linen as nn

from adacorr.core.types import LossFn
from adacorr.methods.common import accuracy, cross_entropy, train_apply


def make_nominal(model: nn.Module) -> LossFn:
  """Mean softmax cross-entropy of the model in train mode. Metrics: 'accuracy'."""

  def loss_fn(params, batch_stats, batch, key):
    logits, new_stats = train_apply(model, params, batch_stats, batch["image"], key)
    return cross_entropy(logits, batch["label"]), {
        "batch_stats": new_stats, "metrics": {"accuracy": accuracy(logits, batch["label"])}}

  return loss_fn
