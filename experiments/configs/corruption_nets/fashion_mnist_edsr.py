"""Quickstart: a small EDSR x2 super-resolution net on Fashion-MNIST (a few min, 2 CPUs).

EDSR(features=16, num_blocks=2): head conv 1->16, two residual blocks, body conv,
upsampler conv 16->64 + pixel shuffle x2, tail conv 16->1; 21,185 parameters (the
paper-size EDSR-baseline has 64 features and 16 blocks). Pretraining fits x2
super-resolution (L1 loss between x and the net's output from x downsampled x2); AdA
applies it as a near-identity (super-resolve 28 -> 56, downsample back). Adam, batch
128, cosine from 3e-3.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_edsr"
  config.net = "edsr"
  config.net_kwargs.features = 16
  config.net_kwargs.num_blocks = 2
  config.num_epochs = 3.0
  return config
