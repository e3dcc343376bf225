"""Quickstart: self-bounded PAT (Fast-LPA, 10 steps, bound 0.5) on Fashion-MNIST with the
small PreActResNet of the method quickstarts (LPIPS on its 4 stage outputs); half an epoch
(234 steps, about 1.4 s each on 2 CPU cores: Fast-LPA is ~9 nominal forward-backward passes)."""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "pat"
  config.method_kwargs.bound = 0.5
  config.method_kwargs.num_steps = 10
  config.clip_grad_value = 1.0
  config.num_epochs = 0.5
  return config
