"""AdA(EDSR) + DeepAugment + AugMix on CIFAR-10 (Calian et al. 2022, Table 1: mCE 7.83, the
paper's best): clean or DeepAugment sample -> pad-crop + flip -> AdA -> SSIM line search ->
AugMix (App. E.5); otherwise as configs/cifar10_ada_augmix.py."""

from experiments.configs import cifar10_ada_augmix
from experiments.configs import deepaugment_copies


def get_config():
  return deepaugment_copies.add(cifar10_ada_augmix.get_config())
