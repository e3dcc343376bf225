"""Quickstart: ANT^1x1 (Rusak et al. 2020) on Fashion-MNIST, small PreActResNet, 2 epochs on CPU.

A new generator is pretrained at the start of each of the two epochs (the first included,
as in the reference bethgelab/game-of-noise), for 20 batches here (the paper: up to 1000),
and saved for replay as it is then; in epoch 1 the 20% replay part of each batch takes
both saved generators (epoch 0's and epoch 1's), 10% each (the reference's p_history 0.1).

eps (rule of `methods.ant`, also in `cifar10_ant.py`): the l2 norm, after clipping, of the
dataset's best Gaussian noise training perturbation, E_x ||clip(x + sigma z, 0, 1) - x||_2
(`methods.ant.gaussian_noise_eps`; the paper's best ImageNet sigma 0.5 gives their 135 on
ImageNet-like pixels). No Fashion-MNIST sigma is published: sigma 0.1, that of our Fashion-MNIST Gaussian
config (`fashion_mnist_gaussian50.py`, Kireev et al.'s best CIFAR-10 sigma). Measured on the
60,000 training images: 2.325 (6 draws of 10,000: 2.323-2.327); unclipped 0.1 * 28 = 2.8, as
half the pixels are 0. (Earlier: 9.74, the paper's 135 scaled to the same per-pixel rms.)
"""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "ant"
  config.num_epochs = 2.0
  config.method_kwargs.generator = "1x1"
  config.method_kwargs.restart_steps = 20
  config.method_kwargs.eps = 2.32   # the rule above; --config.method_kwargs.eps=X to change
  return config
