"""The bottleneck Wide ResNet-50-2 (torchvision `wide_resnet50_2`) with a CIFAR stem.

RobustAugMix (Martinez et al. 2022) trains a "50-2 Wide ResNet": the first author's public
code (github.com/martinez-hub/robustaugmix, `src/robustaugmix/models/model.py`,
`CIFARWideResNet50_2`) builds torchvision's `wide_resnet50_2` and replaces its stem by a
3x3 stride-1 conv (no bias) and its max pool by the identity. That is this model:

normalise, 3x3 stride-1 conv to `base_features` (64), BN, ReLU (no max pool); four stages
of torchvision bottleneck blocks (3, 4, 6, 3) whose inner widths are `width` (2) times
ResNet-50's, 128, 256, 512, 1024, and whose outputs are ResNet-50's, 256, 512, 1024, 2048,
strides 1, 2, 2, 2 on the 3x3 conv (v1.5), projection shortcut conv1x1 + BN where the
shape changes; global average pooling and a dense layer. 66,847,050 parameters for 10
classes (torchvision's ImageNet model: 68,883,240 for 1000 classes; the 3x3 stem saves
7,680, the 10-class head 2,028,510). It is not a 6n+4 pre-activation WideResNet
(`models.wide_resnet`): WRN-50-2 is a ResNet-50 with doubled bottlenecks.

`stage_sizes`, `base_features` and `width` size it (tests build tiny ones); `width=1` is
a (post-activation) CIFAR ResNet-50.

Marked points (see `FEATURE_POINTS`), each `perturb`-ed and sown to `intermediates`:
  input   raw input in [0, 1], before normalisation;
  stem    the stem conv's output, before its BN and ReLU, (B, H, W, base_features);
  stageK  output of stage K's last block (the torchvision `layerK` output); for 32x32
          inputs spatial sizes 32, 16, 8, 4.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common
from adacorr.models.resnet import Bottleneck

EXPANSION = 4  # a stage's output is EXPANSION * base_features * 2**stage, as in ResNet-50


class WideResNet50_2(nn.Module):
  """torchvision `wide_resnet50_2` with a 3x3 stride-1 stem and no max pool (CIFAR).

  Attributes:
    num_classes: number of logits.
    stage_sizes: bottleneck blocks per stage (four stages).
    base_features: the stem's channels; stage K's output has
      4 * base_features * 2**(K-1) channels.
    width: widening factor of the bottleneck's inner convs (inner width
      width * base_features * 2**(K-1)); one of 1, 2, 4 (it must divide 4).
    mean, std: per-channel statistics used to normalise the [0, 1] input inside.
    dtype: computation dtype; parameters stay float32, logits are float32.
  """
  num_classes: int = 10
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_features: int = 64
  width: int = 2
  mean: tuple[float, ...] = common.CIFAR10_MEAN
  std: tuple[float, ...] = common.CIFAR10_STD
  dtype: Any = jnp.float32

  FEATURE_POINTS = ("input", "stem", "stage1", "stage2", "stage3", "stage4")

  def __post_init__(self):
    sizes = tuple(self.stage_sizes)
    if len(sizes) != 4 or any(int(s) != s or s < 1 for s in sizes):
      raise ValueError(f"stage_sizes must be four block counts >= 1, got {self.stage_sizes}.")
    if int(self.base_features) != self.base_features or self.base_features < 1:
      raise ValueError(f"base_features must be an int >= 1, got {self.base_features}.")
    if self.width not in (1, 2, 4):
      raise ValueError(f"width must divide {EXPANSION} (1, 2 or 4), got {self.width}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    x = common.mark(self, "input", x)
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = common.conv(self.base_features, 3, dtype=self.dtype, name="stem_conv")(x)
    x = common.mark(self, "stem", x)
    x = nn.relu(common.batch_norm(train, self.dtype, name="stem_bn")(x))
    for i, num_blocks in enumerate(self.stage_sizes):
      inner = self.width * self.base_features * 2**i
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = Bottleneck(inner, strides=strides, dtype=self.dtype,
                       expansion=EXPANSION // self.width,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
      x = common.mark(self, f"stage{i + 1}", x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)
