"""AdA(All) + AugMix + DeepAugment on CIFAR-10: EDSR, CAE, VQ-VAE and U-Net share each
batch of clean and DeepAugment samples, then AugMix; otherwise as configs/cifar10_ada_all.py."""

from experiments.configs import cifar10_ada_all
from experiments.configs import deepaugment_copies


def get_config():
  config = cifar10_ada_all.get_config()
  config.method_kwargs.augmix = dict(jsd=False, severity=3, width=3, depth=-1)
  return deepaugment_copies.add(config)
