"""Wide ResNets (Zagoruyko & Komodakis 2016) for 32x32 images.

Pre-activation layout of xternalz/WideResNet-pytorch (the one RobustBench uses):
3x3 stem conv to 16 channels, three stages of (depth - 4) / 6 pre-activation basic
blocks with widths 16k, 32k, 64k and strides 1, 2, 2, dropout between the two convs
of each block, then BN-ReLU, global average pooling and a dense layer (with bias).
WRN-28-10: 36,479,194 parameters for 10 classes; WRN-40-2: 2,243,546.

Marked points (see `FEATURE_POINTS`), each `perturb`-ed and sown to `intermediates`:
  input   raw input in [0, 1], before normalisation;
  stem    stem conv output, (B, H, W, 16);
  stageK  residual-sum output of stage K's last block (K = 1..3), before the final
          BN-ReLU; for 32x32 inputs spatial sizes 32, 16, 8.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common
from adacorr.models.preact_resnet import PreActBlock


class WideResNet(nn.Module):
  """WRN-`depth`-`width`; `WideResNet()` is WRN-28-10.

  Attributes:
    depth: total depth; (depth - 4) must be divisible by 6.
    width: widening factor k.
    num_classes: number of logits.
    dropout_rate: dropout inside each block; active only when `train=True`, which
      then needs a 'dropout' rng (`apply(..., rngs={'dropout': key})`).
    mean, std: per-channel statistics used to normalise the [0, 1] input inside.
    dtype: computation dtype; parameters stay float32, logits are float32.
  """
  depth: int = 28
  width: int = 10
  num_classes: int = 10
  dropout_rate: float = 0.0
  mean: tuple[float, ...] = common.CIFAR10_MEAN
  std: tuple[float, ...] = common.CIFAR10_STD
  dtype: Any = jnp.float32

  FEATURE_POINTS = ("input", "stem", "stage1", "stage2", "stage3")

  def __post_init__(self):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 16, 28, 40), got {self.depth}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    blocks_per_stage = (self.depth - 4) // 6
    x = common.mark(self, "input", x)
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = common.conv(16, 3, dtype=self.dtype, name="stem_conv")(x)
    x = common.mark(self, "stem", x)
    for i, features in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
      for j in range(blocks_per_stage):
        strides = 2 if i > 0 and j == 0 else 1
        x = PreActBlock(features, strides=strides, dropout_rate=self.dropout_rate,
                        dtype=self.dtype, name=f"stage{i + 1}_block{j + 1}")(x, train)
      x = common.mark(self, f"stage{i + 1}", x)
    x = nn.relu(common.batch_norm(train, self.dtype, name="final_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)
