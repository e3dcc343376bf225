"""The paper's CIFAR-10 VQ-VAE (Calian et al. 2022, App. E.6), trained on CIFAR-10's train split.

VQVAE() with the Sonnet example sizes: num_hiddens=128, a 2-layer residual stack with 32
hiddens, 512 codes of dim 64, commitment cost 0.25, EMA codebook (decay 0.99): 662,723
parameters + 99,330 EMA numbers = 762,053 at 3 channels. Loss: MSE / data variance + VQ
loss. Paper hyperparameters: Adam, learning rate 3e-3, batch 16384, 90 epochs (270 steps
of 16384 on CIFAR-10's 50,000 images). The paper "decays [the learning rate] throughout
training using the linear scaling rule"; we read that as: no batch scaling of 3e-3 (Adam),
cosine decay to 0. No augmentation is mentioned.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_cifar10_config()
  config.name = "cifar10_vqvae"
  config.net = "vqvae"
  config.augment = "none"
  config.global_batch_size = 16384
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50
  return config
