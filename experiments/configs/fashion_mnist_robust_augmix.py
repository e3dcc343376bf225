"""Quickstart: RobustAugMix (CE + 12 * JSD(clean, AugMix, l2 PGD)) on Fashion-MNIST, small
PreActResNet, half an epoch. PGD as the paper (eps 1.0, step 2.5 * eps / steps, random
start) with 3 steps instead of 7 for the CPU budget; eps 1.0 at 28x28x1 is a larger share
of the image norm than at 32x32x3."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "robust_augmix"
  config.method_kwargs.eps = 1.0
  config.method_kwargs.num_steps = 3
  config.num_epochs = 0.5
  return config
