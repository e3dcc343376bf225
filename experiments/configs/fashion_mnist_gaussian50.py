"""Quickstart: Gaussian augmentation (sigma 0.1, 50% of the batch) on Fashion-MNIST, 1 epoch."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "gaussian_augmentation"
  config.method_kwargs.sigma = 0.1
  config.method_kwargs.fraction = 0.5
  return config
