"""Quickstart: AugMix + JSD (severity 3, width 3, depth 1-3, lambda 12) on Fashion-MNIST,
small PreActResNet, half an epoch on 2 CPU cores (each step runs 3 views of the batch)."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "augmix"
  config.method_kwargs.jsd = True
  config.num_epochs = 0.5
  return config
