"""AdA(CAE) on Fashion-MNIST: the AdA quickstart's settings with the CAE backbone
(configs/corruption_nets/fashion_mnist_cae.py, pretrained on first use) instead of EDSR
(Calian et al. 2022, Table 1's AdA(CAE) row)."""

from experiments.configs import ada_backbones
from experiments.configs import fashion_mnist_ada


def get_config():
  config = fashion_mnist_ada.get_config()
  config.method_kwargs.backbones = (ada_backbones.backbone("cae", "fashion_mnist"),)
  return config
