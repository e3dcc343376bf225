"""Pre-activation ResNets for 32x32 images (He et al. 2016, "Identity Mappings").

Layout of kuangliu/pytorch-cifar `preact_resnet.py` with the final BN-ReLU of the
pre-activation design (as in locuslab/fast_adversarial and the RLAT reference code):
3x3 stem conv (stride 1, no bias), four stages of pre-activation blocks with widths
64, 128, 256, 512 (x4 for bottlenecks) and strides 1, 2, 2, 2, then BN-ReLU, global
average pooling and a dense layer. The 1x1 projection shortcut (when the shape changes)
reads the pre-activated input, as in both references.

`stem='imagenet'` gives the ImageNet-100 layout of the RLAT reference code
(tml-epfl/adv-training-corruptions `PreActResNet_Imagenet`, the paper's ImageNet-100
PreAct ResNet-18): a 7x7 stride-2 stem conv with padding 1 (sic: the reference's, not
torchvision's 3), BN, ReLU and a 3x3 stride-2 max pool (padding 1) before the stages.

Marked points (see `FEATURE_POINTS`): each is `perturb`-ed and sown to `intermediates`:
  input   raw input in [0, 1], before normalisation, (B, H, W, C);
  stem    stem conv output, (B, H, W, 64) (ImageNet stem: before its BN-ReLU-max pool,
          where the reference adds RLAT's delta[1]; (B, 110, 110, 64) at 224x224);
  stageK  residual-sum output of stage K's last block, before the final BN-ReLU;
          for 32x32 inputs spatial sizes 32, 16, 8, 4.
As a self-bounded LPIPS network (PAT), its stage outputs are signed residual sums, not the
post-ReLU block outputs of the robustness library's ResNet-50 that PAT's paper uses
(`models.CifarResNet`): LPIPS bounds on this model are on another scale than the
paper's. The model never clips: an input perturbation meant to stay in [0, 1] should be passed
as `clip(x + d, 0, 1) - x`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adacorr.models import common


STEMS = ("cifar", "imagenet")


class PreActBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3 + shortcut.

  Input (B, H, W, C_in) -> output (B, H/strides, W/strides, features).
  `dropout_rate` (used by WideResNet) is active only when `train` and then needs a
  'dropout' rng.
  """
  features: int
  strides: int = 1
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn1")(x))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = common.conv(self.features, 1, self.strides, dtype=self.dtype,
                             name="shortcut")(out)
    else:
      shortcut = x
    out = common.conv(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(out)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn2")(out))
    out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
    out = common.conv(self.features, 3, dtype=self.dtype, name="conv2")(out)
    return out + shortcut


class PreActBottleneck(nn.Module):
  """Pre-activation bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3(stride), BN-ReLU-conv1x1.

  Input (B, H, W, C_in) -> output (B, H/strides, W/strides, 4 * features).
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    out_features = self.features * self.expansion
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn1")(x))
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = common.conv(out_features, 1, self.strides, dtype=self.dtype,
                             name="shortcut")(out)
    else:
      shortcut = x
    out = common.conv(self.features, 1, dtype=self.dtype, name="conv1")(out)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn2")(out))
    out = common.conv(self.features, 3, self.strides, dtype=self.dtype, name="conv2")(out)
    out = nn.relu(common.batch_norm(train, self.dtype, name="bn3")(out))
    out = common.conv(out_features, 1, dtype=self.dtype, name="conv3")(out)
    return out + shortcut


class PreActResNet(nn.Module):
  """Pre-activation ResNet for small (e.g. 32x32) images.

  Attributes:
    stage_sizes: number of blocks in each of the four stages.
    block: `PreActBlock` or `PreActBottleneck`.
    num_classes: number of logits.
    mean, std: per-channel statistics used to normalise the [0, 1] input inside.
    dtype: computation dtype (e.g. `jnp.bfloat16`); parameters stay float32 and
      logits are returned as float32.
    width: stem width; stage widths are width * (1, 2, 4, 8).
    stem: 'cifar' (3x3 stride-1 conv) or 'imagenet' (the RLAT reference's 7x7 stride-2
      conv with padding 1, BN, ReLU, 3x3 stride-2 max pool).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: Any = PreActBlock
  num_classes: int = 10
  mean: tuple[float, ...] = common.CIFAR10_MEAN
  std: tuple[float, ...] = common.CIFAR10_STD
  dtype: Any = jnp.float32
  width: int = 64
  stem: str = "cifar"

  FEATURE_POINTS = ("input", "stem", "stage1", "stage2", "stage3", "stage4")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits (B, num_classes) float32 for images `x` (B, H, W, C) in [0, 1]."""
    x = common.mark(self, "input", x)
    x = common.normalize(x, self.mean, self.std, self.dtype)
    if self.stem not in STEMS:
      raise ValueError(f"stem={self.stem!r} must be one of {STEMS}.")
    if self.stem == "cifar":
      x = common.conv(self.width, 3, dtype=self.dtype, name="stem_conv")(x)
      x = common.mark(self, "stem", x)
    else:
      x = common.conv(self.width, 7, 2, padding=1, dtype=self.dtype, name="stem_conv")(x)
      x = common.mark(self, "stem", x)
      x = nn.relu(common.batch_norm(train, self.dtype, name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, strides=strides, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
      x = common.mark(self, f"stage{i + 1}", x)
    x = nn.relu(common.batch_norm(train, self.dtype, name="final_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)


class PreActResNet18(PreActResNet):
  """PreActResNet-18: `PreActBlock` x (2, 2, 2, 2); 11,172,170 parameters for 10 classes."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: Any = PreActBlock


class PreActResNet50(PreActResNet):
  """PreActResNet-50: `PreActBottleneck` x (3, 4, 6, 3), 3x3 stem; 23,513,162 parameters
  for 10 classes."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: Any = PreActBottleneck
