"""Gaussian augmentation on CIFAR-10 (Kireev et al. 2022): sigma 0.1 on 50% of each batch;
PreActResNet-18 with the RLAT paper's optimisation settings."""

from experiments.configs import cifar10_preact_resnet18


def get_config():
  config = cifar10_preact_resnet18.get_config()
  config.method = "gaussian_augmentation"
  config.method_kwargs.sigma = 0.1
  config.method_kwargs.fraction = 0.5
  return config
