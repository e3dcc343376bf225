"""Quickstart: l2 AT (FGM, eps 0.1) on Fashion-MNIST, small PreActResNet, 1 epoch on CPU."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "l2_at"
  config.method_kwargs.eps = 0.1
  return config
