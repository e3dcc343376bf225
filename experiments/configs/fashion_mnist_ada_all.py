"""AdA(All) on Fashion-MNIST: EDSR-tiny, the eighth-width CAE, VQ-VAE and U-Net (each
pretrained on first use, configs/corruption_nets/fashion_mnist_*.py) share each batch, the
AdA quickstart's settings otherwise (Calian et al. 2022, Table 1's AdA(All) row)."""

from experiments.configs import ada_backbones
from experiments.configs import fashion_mnist_ada


def get_config():
  config = fashion_mnist_ada.get_config()
  config.method_kwargs.backbones = ada_backbones.all_backbones(
      "fashion_mnist", config_names=ada_backbones.FASHION_MNIST_SMALL)
  return config
