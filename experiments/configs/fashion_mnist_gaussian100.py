"""Quickstart: Gaussian augmentation (sigma 0.05, whole batch) on Fashion-MNIST, 1 epoch."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "gaussian_augmentation"
  config.method_kwargs.sigma = 0.05
  config.method_kwargs.fraction = 1.0
  return config
