"""Quickstart: GNT_mult (sigma per image from {0.08, ..., 0.38}) on Fashion-MNIST, 1 epoch."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "gnt_mult"
  return config
