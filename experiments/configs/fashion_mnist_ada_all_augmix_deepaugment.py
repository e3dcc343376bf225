"""Quickstart: AdA(All) + AugMix + DeepAugment on Fashion-MNIST: EDSR-tiny, CAE, VQ-VAE and
U-Net (each pretrained on first use, configs/corruption_nets/fashion_mnist_*.py) share each
batch of clean and DeepAugment samples, then AugMix."""

from experiments.configs import ada_backbones
from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_ada_augmix


def get_config():
  config = fashion_mnist_ada_augmix.get_config()
  config.method_kwargs.backbones = tuple(
      ada_backbones.backbone(net, "fashion_mnist",
                             config_name="fashion_mnist_edsr_tiny" if net == "edsr" else None)
      for net in ada_backbones.NETS)
  return deepaugment_copies.add(config)
