"""ResNet-50 for ImageNet-sized images, torchvision layout (ResNet v1.5).

7x7 stride-2 stem conv, BN, ReLU, 3x3 stride-2 max pool; four stages of bottleneck
blocks (3, 4, 6, 3) with widths 64, 128, 256, 512 (outputs x4) and strides 1, 2, 2, 2,
the stride on the 3x3 conv (v1.5); projection shortcut conv1x1 + BN; global average
pooling and a dense layer. 25,557,032 parameters for 1000 classes.

Marked points (see `FEATURE_POINTS`), each `perturb`-ed and sown to `intermediates`:
  input   raw input in [0, 1], before normalisation;
  stem    the stem conv's output, before its BN, ReLU and max pool, (B, H/2, W/2, 64):
          where the RLAT reference code's ImageNet models add their delta[1] (`conv1(out)
          + delta[1]`), so RLAT's eps multipliers follow the reference's formula (the
          point sat after the max pool before, (B, H/4, W/4, 64), a 4x smaller d_l);
  stageK  output of stage K's last block (its ReLU'd residual sum, the torchvision
          `layerK` output); for 224x224 inputs spatial sizes 56, 28, 14, 7.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1-BN, + shortcut, ReLU.

  Input (B, H, W, C_in) -> output (B, H/strides, W/strides, 4 * features).
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    out_features = self.features * self.expansion
    out = common.conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn1")(out))
    out = common.conv(self.features, 3, self.strides, dtype=self.dtype, name="conv2")(out)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn2")(out))
    out = common.conv(out_features, 1, dtype=self.dtype, name="conv3")(out)
    out = common.batch_norm(train, self.dtype, name="bn3")(out)
    if self.strides != 1 or x.shape[-1] != out_features:
      x = common.conv(out_features, 1, self.strides, dtype=self.dtype, name="shortcut_conv")(x)
      x = common.batch_norm(train, self.dtype, name="shortcut_bn")(x)
    return nn.relu(out + x)


class ResNet50(nn.Module):
  """ResNet-50 (torchvision v1.5 layout) with the normalisation inside.

  Attributes:
    num_classes: number of logits (default 1000).
    mean, std: per-channel statistics (default ImageNet).
    dtype: computation dtype; parameters stay float32, logits are float32.
    stage_sizes: blocks per stage.
  """
  num_classes: int = 1000
  mean: tuple[float, ...] = common.IMAGENET_MEAN
  std: tuple[float, ...] = common.IMAGENET_STD
  dtype: Any = jnp.float32
  stage_sizes: Sequence[int] = (3, 4, 6, 3)

  FEATURE_POINTS = ("input", "stem", "stage1", "stage2", "stage3", "stage4")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    x = common.mark(self, "input", x)
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = common.conv(64, 7, 2, dtype=self.dtype, name="stem_conv")(x)
    x = common.mark(self, "stem", x)
    x = nn.relu(common.batch_norm(train, self.dtype, name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(64 * 2**i, strides=strides, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
      x = common.mark(self, f"stage{i + 1}", x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)
