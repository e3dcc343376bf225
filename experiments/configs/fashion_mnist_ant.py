"""Quickstart: ANT^1x1 (Rusak et al. 2020) on Fashion-MNIST, small PreActResNet, 2 epochs on CPU.

Two epochs so that the epoch-1 start runs once: the epoch-0 generator goes into the replay
buffer (the 20% replay part of each batch then uses it) and a new generator is pretrained
against the classifier, for 20 batches here (the paper: up to 1000). eps is the paper's 135
at 224x224x3 scaled to 28x28x1 (9.74; the same per-pixel rms change of 0.35).
"""

import ml_collections

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "ant"
  config.num_epochs = 2.0
  config.method_kwargs.generator = "1x1"
  config.method_kwargs.restart_steps = 20
  # None: the paper's 135 at 224x224x3 scaled to the image size; --config.method_kwargs.eps=X
  config.method_kwargs.eps = ml_collections.config_dict.placeholder(float)
  return config
