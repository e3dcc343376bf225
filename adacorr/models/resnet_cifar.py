"""Post-activation ResNets for 32x32 images: the robustness library's CIFAR ResNet-50.

The network Laidlaw et al. (2021) train with PAT on CIFAR-10 (their Table 12: "ResNet-50",
23,520,842 parameters) is MadryLab/robustness `robustness/cifar_models/resnet.py`
`ResNet50` (the kuangliu/pytorch-cifar layout, post-activation He et al. 2016 blocks):

  3x3 stride-1 stem conv (no bias, padding 1) to `width` (64), BN, ReLU, no max pool;
  four stages of blocks, widths `width` * (1, 2, 4, 8), strides 1, 2, 2, 2, the first
  block of a stage taking the stride; global average pooling; a dense layer.

`block='bottleneck'` (ResNet-50, stages (3, 4, 6, 3)) is the library's `Bottleneck`,
conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1(x4)-BN, + shortcut, ReLU, the shortcut
a conv1x1(stride)-BN projection where the shape changes (the same block as torchvision's
v1.5, `adacorr.models.resnet.Bottleneck`). `block='basic'` is its `BasicBlock` (ResNet-18
with stages (2, 2, 2, 2)): conv3x3(stride)-BN-ReLU, conv3x3-BN, + shortcut, ReLU.
The library pools with `F.avg_pool2d(out, 4)`, the global average for 32x32 inputs (stage 4
is 4x4) and for 28x28 ones (stage 4 is also 4x4: 28, 14, 7, 4); here it is the global mean
at any size. `width` is the library's `wm` (64 * wm) and `stage_sizes` its `num_blocks`:
small, fast variants for CPU quickstarts use them.

Parameter count of `CifarResNet50()` with 10 classes, 23,520,842 (the paper's number),
as torchvision's ResNet-50 (25,557,032 for 1000 classes) minus 7,680 for the 3x3x3x64 stem
instead of 7x7x3x64 and minus 2,028,510 for the 10-class head; see
`tests/test_resnet_cifar.py` for the count by layer.

Marked points (see `FEATURE_POINTS`), each `perturb`-ed and sown to `intermediates`:
  input   raw input in [0, 1], before normalisation;
  stem    the stem conv's output, before its BN and ReLU, (B, H, W, width);
  stageK  output of stage K's last block, AFTER its final ReLU (the library's `layerK`
          output): non-negative; for 32x32 inputs spatial sizes 32, 16, 8, 4.

LPIPS layers (`LPIPS_LAYERS`): stage1..stage4, the outputs of conv2_x..conv5_x (paper App.
H.1), exactly the features of the reference's `CifarResNetFeatureModel`
(cassidylaidlaw/perceptual-advex `models.py`: `layer1`..`layer4` outputs, `fake_relu=False`).
Being post-ReLU and non-negative, these are the layers on which the paper's self-bounded
bounds (0.5 for training on CIFAR-10) are calibrated; the stage outputs of
`PreActResNet` are signed residual sums before the final BN-ReLU, so the same bound
there is a different set.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common
from adacorr.models.resnet import Bottleneck

BLOCKS = ("bottleneck", "basic")


class BasicBlock(nn.Module):
  """Post-activation basic block: conv3x3(stride)-BN-ReLU, conv3x3-BN, + shortcut, ReLU.

  Input (B, H, W, C_in) -> output (B, H/strides, W/strides, features), non-negative.
  The shortcut is a conv1x1(stride)-BN projection when the shape changes.
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = common.conv(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(x)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn1")(out))
    out = common.conv(self.features, 3, dtype=self.dtype, name="conv2")(out)
    out = common.batch_norm(train, self.dtype, name="bn2")(out)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = common.conv(self.features, 1, self.strides, dtype=self.dtype,
                      name="shortcut_conv")(x)
      x = common.batch_norm(train, self.dtype, name="shortcut_bn")(x)
    return nn.relu(out + x)


class CifarResNet(nn.Module):
  """The robustness library's post-activation CIFAR ResNet (any depth and width).

  Attributes:
    stage_sizes: blocks in each of the four stages.
    block: 'bottleneck' (ResNet-50 family, stage K outputs 4 * width * 2**(K-1)
      channels) or 'basic' (ResNet-18 family, width * 2**(K-1)).
    num_classes: number of logits.
    width: the stem's channels (64; the library's 64 * wm); stage K's inner width is
      width * 2**(K-1).
    mean, std: per-channel statistics used to normalise the [0, 1] input inside
      (their length is the number of input channels: 1 for Fashion-MNIST).
    dtype: computation dtype; parameters stay float32, logits are float32.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  num_classes: int = 10
  width: int = 64
  mean: tuple[float, ...] = common.CIFAR10_MEAN
  std: tuple[float, ...] = common.CIFAR10_STD
  dtype: Any = jnp.float32

  FEATURE_POINTS = ("input", "stem", "stage1", "stage2", "stage3", "stage4")
  LPIPS_LAYERS = ("stage1", "stage2", "stage3", "stage4")

  def __post_init__(self):
    if self.block not in BLOCKS:
      raise ValueError(f"block={self.block!r} must be one of {BLOCKS}.")
    sizes = tuple(self.stage_sizes)
    if len(sizes) != 4 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in sizes):
      raise ValueError(f"stage_sizes must be four block counts >= 1, got {self.stage_sizes}.")
    if isinstance(self.width, bool) or int(self.width) != self.width or self.width < 1:
      raise ValueError(f"width must be an int >= 1, got width={self.width!r}.")
    if isinstance(self.num_classes, bool) or int(self.num_classes) != self.num_classes \
        or self.num_classes < 1:
      raise ValueError(f"num_classes must be an int >= 1, got {self.num_classes!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    x = common.mark(self, "input", x)
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = common.conv(self.width, 3, dtype=self.dtype, name="stem_conv")(x)
    x = common.mark(self, "stem", x)
    x = nn.relu(common.batch_norm(train, self.dtype, name="stem_bn")(x))
    for i, num_blocks in enumerate(self.stage_sizes):
      features = self.width * 2**i
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        name = f"stage{i + 1}_block{j + 1}"
        if self.block == "bottleneck":
          x = Bottleneck(features, strides=strides, dtype=self.dtype, name=name)(x, train)
        else:
          x = BasicBlock(features, strides=strides, dtype=self.dtype, name=name)(x, train)
      x = common.mark(self, f"stage{i + 1}", x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)


class CifarResNet50(CifarResNet):
  """robustness `cifar_models.ResNet50`: bottlenecks x (3, 4, 6, 3), 3x3 stem, width 64;
  23,520,842 parameters for 10 classes (Laidlaw et al. 2021, Table 12)."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"


class CifarResNet18(CifarResNet):
  """robustness `cifar_models.ResNet18`: basic blocks x (2, 2, 2, 2); 11,173,962
  parameters for 10 classes."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
