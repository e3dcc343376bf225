"""Classifiers (flax.linen). All take NHWC float32 images in [0, 1] and normalise inside.

Common contract: attributes `num_classes`, `mean`, `std`, `dtype`;
`model.apply(variables, x, train=False) -> logits (B, num_classes) float32`;
BatchNorm statistics in the `batch_stats` collection (pass `mutable=['batch_stats']`
when `train=True`). ResNet-family models mark `FEATURE_POINTS` with `perturb`
(collection 'perturbations') and `sow` (collection 'intermediates').
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from adacorr.models.alexnet import AlexNet, CifarAlexNet
from adacorr.models.common import (
    CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN,
    IMAGENET_STD, normalize)
from adacorr.models.preact_resnet import (
    PreActBlock, PreActBottleneck, PreActResNet, PreActResNet18, PreActResNet50)
from adacorr.models.resnet import ResNet50
from adacorr.models.resnet_cifar import CifarResNet
from adacorr.models.small_cnn import SmallCNN
from adacorr.models.wide_resnet import WideResNet
from adacorr.models.wide_resnet_bottleneck import WideResNet50_2

MODELS: dict[str, type[nn.Module]] = {
    "cifar_resnet": CifarResNet,  # robustness lib's post-activation CIFAR ResNet-50 (PAT's)
    "wide_resnet50_2": WideResNet50_2,  # torchvision's bottleneck WRN-50-2, 3x3 CIFAR stem
    "preact_resnet": PreActResNet,  # any depth/width, e.g. small ones for CPU quickstarts
    "preact_resnet18": PreActResNet18,
    "preact_resnet50": PreActResNet50,
    "wide_resnet": WideResNet,
    "resnet50": ResNet50,
    "cifar_alexnet": CifarAlexNet,
    "alexnet": AlexNet,  # torchvision's ImageNet AlexNet (LPIPS trunk)
    "small_cnn": SmallCNN,
}


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the classifier called `name` (one of `MODELS`) with attributes `kwargs`.

  Example: `get_model('wide_resnet', depth=40, width=2, num_classes=100)`.

  Raises:
    ValueError: if `name` is unknown.
  """
  try:
    cls = MODELS[name]
  except KeyError:
    raise ValueError(
        f"name={name!r} is not a known model; known names: {', '.join(sorted(MODELS))}."
    ) from None
  return cls(**kwargs)


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
    "IMAGENET_MEAN", "IMAGENET_STD", "MODELS", "AlexNet", "CifarAlexNet", "CifarResNet",
    "PreActBlock",
    "PreActBottleneck", "PreActResNet", "PreActResNet18", "PreActResNet50", "ResNet50",
    "SmallCNN", "WideResNet", "WideResNet50_2", "get_model", "normalize",
]
