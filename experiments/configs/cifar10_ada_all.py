"""AdA(All) on CIFAR-10: EDSR, CAE, VQ-VAE and U-Net, each corrupting an equal share of
every batch (App. E.4); otherwise as configs/cifar10_ada.py."""

from experiments.configs import ada_backbones
from experiments.configs import cifar10_ada


def get_config():
  config = cifar10_ada.get_config()
  config.method_kwargs.backbones = ada_backbones.all_backbones("cifar10")
  return config
