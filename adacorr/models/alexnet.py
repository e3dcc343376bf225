"""AlexNet for 32x32 images, as used by Laidlaw et al. 2021 (PAT) for CIFAR LPIPS.

Layout of `CifarAlexNet` in cassidylaidlaw/perceptual-advex (`perceptual_advex/models.py`):
  conv 3->64 (3x3, stride 2, pad 1), ReLU, maxpool 2
  conv 64->192 (3x3, pad 1), ReLU, maxpool 2
  conv 192->384 (3x3, pad 1), ReLU
  conv 384->256 (3x3, pad 1), ReLU
  conv 256->256 (3x3, pad 1), ReLU, maxpool 2        -> (B, 2, 2, 256) for 32x32 input
  dropout, dense 1024->4096, ReLU, dropout, dense 4096->4096, ReLU, dense 4096->classes.
Convs have biases; no BatchNorm. 23,272,266 parameters for 10 classes and 32x32 input.

The five conv+ReLU outputs are sown to `intermediates` as 'conv1'..'conv5'
(`FEATURE_POINTS`), the LPIPS layers of PAT; for 32x32 inputs their spatial sizes are
16, 8, 4, 4, 4. Dropout (rate 0.5) is active only when `train=True`, which then needs a
'dropout' rng. The (2, 2, 256) map is flattened channel-major (C, H, W) like the PyTorch
`view`, so converted PyTorch weights can be loaded. Note: PAT's `AlexNetFeatureModel`
normalises with ImageNet statistics; pass `mean=IMAGENET_MEAN, std=IMAGENET_STD` for
converted PAT checkpoints.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common


class CifarAlexNet(nn.Module):
  """AlexNet for CIFAR (PAT's LPIPS network).

  Attributes:
    num_classes: number of logits.
    mean, std: per-channel statistics used to normalise the [0, 1] input inside.
    dtype: computation dtype; parameters stay float32, logits are float32.
    dropout_rate: classifier dropout rate (PyTorch `nn.Dropout()` default 0.5).
  """
  num_classes: int = 10
  mean: tuple[float, ...] = common.CIFAR10_MEAN
  std: tuple[float, ...] = common.CIFAR10_STD
  dtype: Any = jnp.float32
  dropout_rate: float = 0.5

  FEATURE_POINTS = ("conv1", "conv2", "conv3", "conv4", "conv5")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    x = common.normalize(x, self.mean, self.std, self.dtype)
    convs = ((64, 2, True), (192, 1, True), (384, 1, False), (256, 1, False), (256, 1, True))
    for i, (features, strides, pool) in enumerate(convs):
      x = common.conv(features, 3, strides, use_bias=True, dtype=self.dtype)(x)
      x = nn.relu(x)
      self.sow("intermediates", f"conv{i + 1}", x)
      if pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc2")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)
