"""Quickstart: RLAT (eps 0.08, all 6 points) on Fashion-MNIST, small PreActResNet, 1 epoch on CPU."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "rlat"
  config.method_kwargs.eps = 0.08
  return config
