"""Quickstart: DeepAugment + RLAT (eps 0.02, as the paper's CIFAR-10 model) on Fashion-MNIST."""

from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_rlat


def get_config():
  config = fashion_mnist_rlat.get_config()
  config.method_kwargs.eps = 0.02
  return deepaugment_copies.add(config)
