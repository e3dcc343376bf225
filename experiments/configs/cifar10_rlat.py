"""RLAT (Kireev et al. 2022) on CIFAR-10: PreActResNet-18, eps 0.08, 6 layers, l2; SGD
momentum 0.9, wd 5e-4, lr 0.1, batch 128, 150 epochs, lr /10 at 34% and 67%."""

from experiments.configs import cifar10_preact_resnet18


def get_config():
  config = cifar10_preact_resnet18.get_config()
  config.method = "rlat"
  config.method_kwargs.eps = 0.08
  config.method_kwargs.norm = "l2"
  return config
