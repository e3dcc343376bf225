"""AugMix + JSD + RLAT on CIFAR-10 (Kireev et al. 2022, Table 2, 89.6% on CIFAR-10-C):
RLAT perturbs the clean view and both AugMix views (one batch of 3B); loss CE(clean) +
12 * JSD of the perturbed views; eps 0.05; PreActResNet-18 with RLAT's settings."""

from experiments.configs import cifar10_augmix_rlat


def get_config():
  config = cifar10_augmix_rlat.get_config()
  config.method_kwargs.augmix = dict(jsd=True, jsd_weight=12.0, severity=3, width=3, depth=-1)
  return config
