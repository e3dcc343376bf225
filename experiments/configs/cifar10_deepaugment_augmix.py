"""DeepAugment + AugMix on CIFAR-10 (Calian et al. 2022's strongest non-AdA baseline, mCE
7.99): clean + DeepAugment copies -> pad-crop + flip -> AugMix, CE; PreActResNet-50 with
the AdA paper's settings (configs/cifar10_preact_resnet50.py)."""

from experiments.configs import cifar10_preact_resnet50
from experiments.configs import deepaugment_copies


def get_config():
  config = cifar10_preact_resnet50.get_config()
  config.method = "augmix"
  config.method_kwargs.jsd = False
  return deepaugment_copies.add(config)
