"""AugMix + RLAT on CIFAR-10 (Kireev et al. 2022, Table 2): RLAT (l2, all 6 points) on
AugMix images, eps 0.05 (the paper's eps with AugMix); PreActResNet-18, RLAT settings."""

from experiments.configs import cifar10_rlat


def get_config():
  config = cifar10_rlat.get_config()
  config.method_kwargs.eps = 0.05
  config.method_kwargs.augmix = dict(jsd=False, severity=3, width=3, depth=-1)
  return config
