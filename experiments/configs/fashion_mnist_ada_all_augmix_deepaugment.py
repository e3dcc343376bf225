"""Quickstart: AdA(All) + AugMix + DeepAugment on Fashion-MNIST: EDSR-tiny, the
quarter-width CAE, VQ-VAE and U-Net (each pretrained on first use,
configs/corruption_nets/fashion_mnist_*.py) share each batch of clean and DeepAugment
samples, then AugMix."""

from experiments.configs import ada_backbones
from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_ada_augmix


def get_config():
  config = fashion_mnist_ada_augmix.get_config()
  config.method_kwargs.backbones = ada_backbones.all_backbones(
      "fashion_mnist", config_names=ada_backbones.FASHION_MNIST_SMALL)
  return deepaugment_copies.add(config)
