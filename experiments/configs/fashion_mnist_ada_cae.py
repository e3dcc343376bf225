"""AdA(CAE) on Fashion-MNIST: the AdA quickstart's settings with a CAE backbone instead of
EDSR (Calian et al. 2022, Table 1's AdA(CAE) row): the eighth-width CAE
(configs/corruption_nets/fashion_mnist_cae_tiny.py, pretrained on first use), since
DeepAugment's full-width CAE costs ~1 min per AdA step of 128 on 2 CPU cores and the
quarter-width one ~8 s (the eighth-width ~4 s; RESULTS.md)."""

from experiments.configs import ada_backbones
from experiments.configs import fashion_mnist_ada


def get_config():
  config = fashion_mnist_ada.get_config()
  config.method_kwargs.backbones = (ada_backbones.backbone(
      "cae", "fashion_mnist", config_name=ada_backbones.FASHION_MNIST_SMALL["cae"]),)
  return config
