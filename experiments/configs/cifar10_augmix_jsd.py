"""AugMix + JSD on CIFAR-10 (Kireev et al. 2022, Table 2 "AugMix + JSD"): CE on the clean
view + 12 * JSD(clean, AugMix, AugMix), the three views in one batch; PreActResNet-18
with the RLAT paper's training settings."""

from experiments.configs import cifar10_augmix


def get_config():
  config = cifar10_augmix.get_config()
  config.method_kwargs.jsd = True
  config.method_kwargs.jsd_weight = 12.0
  return config
