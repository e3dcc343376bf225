"""Quickstart: speckle noise training (sigma per image from {0.15, ..., 0.6}) on Fashion-MNIST."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "speckle"
  return config
