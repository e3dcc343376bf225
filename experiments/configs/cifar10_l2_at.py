"""l2 adversarial training (Kireev et al. 2022) on CIFAR-10: FGM, zero init, eps 0.1;
PreActResNet-18 with the RLAT paper's optimisation settings."""

from experiments.configs import cifar10_preact_resnet18


def get_config():
  config = cifar10_preact_resnet18.get_config()
  config.method = "l2_at"
  config.method_kwargs.eps = 0.1
  return config
