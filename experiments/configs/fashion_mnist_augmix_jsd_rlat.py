"""Quickstart: AugMix + JSD + RLAT (eps 0.05) on Fashion-MNIST, half an epoch (3 views)."""

from experiments.configs import fashion_mnist_rlat


def get_config():
  config = fashion_mnist_rlat.get_config()
  config.method_kwargs.eps = 0.05
  config.method_kwargs.augmix = dict(jsd=True, jsd_weight=12.0)
  config.num_epochs = 0.5
  return config
