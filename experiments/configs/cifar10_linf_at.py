"""l_inf adversarial training (Kireev et al. 2022) on CIFAR-10: FGSM, zero init, eps 1/255;
PreActResNet-18 with the RLAT paper's optimisation settings (PGD-k: set num_steps/step_size)."""

from experiments.configs import cifar10_preact_resnet18


def get_config():
  config = cifar10_preact_resnet18.get_config()
  config.method = "linf_at"
  config.method_kwargs.eps = 1 / 255
  return config
