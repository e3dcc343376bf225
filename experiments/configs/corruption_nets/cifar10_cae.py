"""The full compressive autoencoder (2,241,859 parameters at 3 channels), trained on CIFAR-10.

The paper uses DeepAugment's released CAE weights (`adacorr.models.corruption.
convert_torch`); this config trains the same architecture ourselves instead: 32x32 ->
an 8x8x32 binary code (stochastic binarisation while training) -> 32x32, MSE loss.
Hyperparameters are ours (not from the paper): Adam, learning rate 1e-4, batch 256,
90 epochs, cosine decay, random flips.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_cifar10_config()
  config.name = "cifar10_cae"
  config.net = "cae"
  # Its last conv starts at zero: the output is clip(tanh(.), 0, 1), and from the default
  # init about half the pixels start clipped at 0 with no gradient (see fashion_mnist_cae).
  config.zero_init = ("d_up_conv_3/conv_2",)
  config.global_batch_size = 256
  config.learning_rate = 1e-4
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
