"""DeepAugment + RLAT on CIFAR-10 (Kireev et al. 2022, Table 2): RLAT eps 0.02 (the
reference's evaluated model, rlat-eps=0.02-deepaugment) on clean + DeepAugment copies."""

from experiments.configs import cifar10_rlat
from experiments.configs import deepaugment_copies


def get_config():
  config = cifar10_rlat.get_config()
  config.method_kwargs.eps = 0.02
  return deepaugment_copies.add(config)
