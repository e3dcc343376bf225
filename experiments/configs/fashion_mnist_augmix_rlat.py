"""Quickstart: AugMix + RLAT (eps 0.05, the paper's value with AugMix) on Fashion-MNIST."""

from experiments.configs import fashion_mnist_rlat


def get_config():
  config = fashion_mnist_rlat.get_config()
  config.method_kwargs.eps = 0.05
  config.method_kwargs.augmix = dict(jsd=False)
  return config
