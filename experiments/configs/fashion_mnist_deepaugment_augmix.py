"""Quickstart: DeepAugment + AugMix (no JSD, AugMix last) on Fashion-MNIST."""

from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "augmix"
  config.method_kwargs.jsd = False
  return deepaugment_copies.add(config)
