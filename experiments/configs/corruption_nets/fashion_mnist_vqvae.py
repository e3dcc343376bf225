"""Quickstart: a small VQ-VAE on Fashion-MNIST (a few min, 2 CPUs).

VQVAE(num_hiddens=32, num_residual_hiddens=16, embedding_dim=16, num_embeddings=128):
28x28 -> a 7x7 grid of 128 codes of dim 16 (EMA codebook, decay 0.99, commitment 0.25)
-> 28x28; 52,049 parameters + 6,402 EMA numbers (the paper's VQ-VAE has num_hiddens=128,
32 residual hiddens and 512 codes of dim 64). Loss: MSE / data variance + VQ loss.
Adam, batch 128, 2 epochs, cosine from 3e-3.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_vqvae"
  config.net = "vqvae"
  config.net_kwargs.num_hiddens = 32
  config.net_kwargs.num_residual_layers = 2
  config.net_kwargs.num_residual_hiddens = 16
  config.net_kwargs.embedding_dim = 16
  config.net_kwargs.num_embeddings = 128
  config.num_epochs = 2.0
  return config
