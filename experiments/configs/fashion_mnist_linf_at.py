"""Quickstart: l_inf AT (FGSM, eps 1/255) on Fashion-MNIST, small PreActResNet, 1 epoch on CPU."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "linf_at"
  config.method_kwargs.eps = 1 / 255
  return config
