"""Quickstart: ANT^3x3 + RLAT on Fashion-MNIST, small PreActResNet, 2 epochs on CPU.

RLAT (l2, all 6 points) on the ANT batch with eps 0.02: Kireev et al. 2022 combine RLAT
with ANT^3x3 only on ImageNet-100 (Table 2), with eps 0.02 (their released
`full_evaluation_results/imagenet100/rlat-eps=0.02-ant-imagenet100.csv`).
"""

from experiments.configs import fashion_mnist_ant


def get_config():
  config = fashion_mnist_ant.get_config()
  config.method_kwargs.generator = "3x3"
  config.method_kwargs.rlat = dict(eps=0.02, norm="l2")
  return config
