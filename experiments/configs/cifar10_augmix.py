"""AugMix without the JSD loss on CIFAR-10 (Kireev et al. 2022, Table 2 "AugMix"): CE on
AugMix images (severity 3, width 3, depth 1-3, Dirichlet/Beta(1) mixing); PreActResNet-18
with the RLAT paper's training settings (configs/cifar10_preact_resnet18.py)."""

from experiments.configs import cifar10_preact_resnet18


def get_config():
  config = cifar10_preact_resnet18.get_config()
  config.method = "augmix"
  config.method_kwargs.jsd = False
  config.method_kwargs.severity = 3
  config.method_kwargs.width = 3
  config.method_kwargs.depth = -1
  return config
