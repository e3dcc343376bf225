"""Quickstart: AdA(EDSR) + AugMix on Fashion-MNIST: the AdA demo (configs/fashion_mnist_ada.py)
with AugMix applied last (App. E.5), CE on the result."""

from experiments.configs import fashion_mnist_ada


def get_config():
  config = fashion_mnist_ada.get_config()
  config.method_kwargs.augmix = dict(jsd=False)
  return config
