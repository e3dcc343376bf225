"""ANT^3x3 + RLAT on CIFAR-10 (Kireev et al. 2022 combine RLAT with ANT^3x3): RLAT (l2, all
6 points) on the ANT batch; PreActResNet-18 with the RLAT paper's settings.

RLAT eps 0.02: the paper reports ANT^3x3 + RLAT only on ImageNet-100, with eps 0.02
(`full_evaluation_results/imagenet100/rlat-eps=0.02-ant-imagenet100.csv`); on CIFAR-10 they
lower RLAT's eps from 0.08 when combining it with a strong augmentation (0.05 with AugMix,
0.02 with DeepAugment). ANT settings as `cifar10_ant.py` (eps 5.36, see there).
"""

from experiments.configs import cifar10_ant


def get_config():
  config = cifar10_ant.get_config()
  config.method_kwargs.generator = "3x3"
  config.method_kwargs.rlat = dict(eps=0.02, norm="l2")
  return config
