"""DeepAugment on CIFAR-10 (Kireev et al. 2022, Table 2 "DeepAugment"): nominal training on
the clean set plus its EDSR and CAE DeepAugment copies (configs/deepaugment_copies.py),
PreActResNet-18 with the RLAT paper's settings and the same number of steps."""

from experiments.configs import cifar10_preact_resnet18
from experiments.configs import deepaugment_copies


def get_config():
  return deepaugment_copies.add(cifar10_preact_resnet18.get_config())
