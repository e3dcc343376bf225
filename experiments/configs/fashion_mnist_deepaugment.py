"""Quickstart: DeepAugment on Fashion-MNIST: nominal training of the small PreActResNet on
the clean set plus its EDSR-tiny and CAE copies (make them first: see
configs/deepaugment_copies.py), as many steps as one clean epoch."""

from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_base


def get_config():
  return deepaugment_copies.add(fashion_mnist_base.get_config())
