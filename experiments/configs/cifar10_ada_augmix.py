"""AdA(EDSR) + AugMix on CIFAR-10 (Calian et al. 2022, Table 1: mCE 9.40): the pipeline of
App. E.5, pad-crop + flip -> AdA -> SSIM line search -> AugMix (last), then CE; otherwise
as configs/cifar10_ada.py. The paper applies AugMix as a data-pipeline stage, so no JSD
term (`--config.method_kwargs.augmix.jsd=True` adds CE(AdA) + 12 * JSD instead)."""

from experiments.configs import cifar10_ada


def get_config():
  config = cifar10_ada.get_config()
  config.method_kwargs.augmix = dict(jsd=False, severity=3, width=3, depth=-1)
  return config
