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

`AlexNet` is torchvision's ImageNet AlexNet (`torchvision.models.alexnet`), the LPIPS
network of Zhang et al. 2018 and of PAT on ImageNet-scale images:
  conv 3->64 (11x11, stride 4, pad 2), ReLU, maxpool 3 stride 2
  conv 64->192 (5x5, pad 2), ReLU, maxpool 3 stride 2
  conv 192->384 (3x3, pad 1), ReLU
  conv 384->256 (3x3, pad 1), ReLU
  conv 256->256 (3x3, pad 1), ReLU, maxpool 3 stride 2
  adaptive average pool to 6x6 (PyTorch's `AdaptiveAvgPool2d((6, 6))` bins)
  dropout, dense 9216->4096, ReLU, dropout, dense 4096->4096, ReLU, dense 4096->classes.
61,100,840 parameters for 1000 classes. It sows 'conv1'..'conv5' like `CifarAlexNet`
(spatial sizes 55, 27, 13, 13, 13 for 224x224 input) and needs inputs of at least
63x63 pixels (31x31 with `features_only=True`, which stops after conv5 like the
`lpips` package's trunk). Converter: `adacorr.perceptual.alexnet_params_from_torch`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
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


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """PyTorch's `AdaptiveAvgPool2d(output_size)` on NHWC `x` (B, H, W, C).

  Output bin i along an axis of length n averages [floor(i n / m), ceil((i + 1) n / m))
  with m the output length, so bins may overlap or repeat (n < m). Returns
  (B, *output_size, C) in the dtype of `x`.
  """
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC batch, got shape {x.shape}.")
  for axis, m in zip((1, 2), output_size):
    n = x.shape[axis]
    if n == m:
      continue
    bins = [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]
    x = jnp.stack([jnp.mean(jax.lax.slice_in_dim(x, a, b, axis=axis), axis=axis)
                   for a, b in bins], axis=axis)
  return x


class AlexNet(nn.Module):
  """torchvision's ImageNet AlexNet (the LPIPS trunk of Zhang et al. and PAT).

  Attributes:
    num_classes: number of logits.
    mean, std: per-channel statistics used to normalise the [0, 1] input inside
      (ImageNet's by default, as torchvision's weights expect).
    dtype: computation dtype; parameters stay float32, logits are float32.
    dropout_rate: classifier dropout rate (torchvision's 0.5).
    features_only: stop after conv5's ReLU and return that map (B, H', W', 256)
      float32; no classifier parameters (the `lpips` package's trunk).
  """
  num_classes: int = 1000
  mean: tuple[float, ...] = common.IMAGENET_MEAN
  std: tuple[float, ...] = common.IMAGENET_STD
  dtype: Any = jnp.float32
  dropout_rate: float = 0.5
  features_only: bool = False

  FEATURE_POINTS = ("conv1", "conv2", "conv3", "conv4", "conv5")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1], H, W >= 63.

    With `features_only`, the conv5 map (B, H', W', 256) float32 instead.
    """
    x = common.normalize(x, self.mean, self.std, self.dtype)
    # (features, kernel, stride, padding, maxpool after)
    convs = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
             (256, 3, 1, 1, False), (256, 3, 1, 1, True))
    for i, (features, kernel, strides, pad, pool) in enumerate(convs):
      x = common.conv(features, kernel, strides, pad, use_bias=True, dtype=self.dtype)(x)
      x = nn.relu(x)
      self.sow("intermediates", f"conv{i + 1}", x)
      if self.features_only and i == len(convs) - 1:
        return x.astype(jnp.float32)
      if pool:
        if min(x.shape[1:3]) < 3:
          raise ValueError(
              f"x is too small for AlexNet: the map before maxpool {i + 1} is "
              f"{x.shape[1]}x{x.shape[2]} (< 3); use inputs of at least 63x63 pixels "
              "(31x31 with features_only=True).")
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = adaptive_avg_pool(x, (6, 6))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # (C, H, W) like torch
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name="fc2")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)
