"""The full compressive autoencoder trained on ImageNet-100, for AdA(All) / AdA(CAE) on
ImageNet (configs/imagenet100_ada.py with `--backbones=edsr,cae`). The paper uses
DeepAugment's released CAE weights (`--cae_torch_weights=PATH`); this trains the same
architecture ourselves with CIFAR-10's settings (ours, not the paper's): Adam, learning
rate 1e-4, batch 256, MSE loss, stochastic binarisation while training, random flips.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_imagenet100_config()
  config.name = "imagenet100_cae"
  config.net = "cae"
  # Its last conv starts at zero (see cifar10_cae / fashion_mnist_cae).
  config.zero_init = ("d_up_conv_3/conv_2",)
  config.global_batch_size = 256
  config.learning_rate = 1e-4
  config.num_epochs = 30.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
