"""The compressive autoencoder at a quarter of the width (`CAE(features=32)`: 163,329
parameters at one channel, 1/14 of DeepAugment's) on Fashion-MNIST, for AdA(CAE) and
AdA(All) on 2 CPU cores: the full CAE costs ~1 min per AdA step of 128 there. Same
architecture ratios, code (7x7x32 bits), loss, zero-initialised last conv and optimiser
as configs/corruption_nets/fashion_mnist_cae.py, trained 4x the steps (each is ~10x
cheaper)."""

from experiments.configs.corruption_nets import fashion_mnist_cae


def get_config():
  config = fashion_mnist_cae.get_config()
  config.name = "fashion_mnist_cae_small"
  config.net_kwargs.features = 32
  config.num_steps = 600
  config.checkpoint_every_steps = 200
  return config
