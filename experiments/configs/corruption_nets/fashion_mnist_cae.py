"""Quickstart: the compressive autoencoder (CAE) on Fashion-MNIST (a few min, 2 CPUs).

The CAE has no size options: this is the full DeepAugment CAE (2,238,369 parameters at
one channel; 28x28 -> a 7x7x32 binary code -> 28x28), trained with the MSE between
CAE()(x, train=True) (stochastic binarisation) and x. On 2 CPU cores a step of 32 images
takes ~1.4 s, so this trains only 150 steps (4,800 images, 0.08 epochs) at a constant
learning rate (Adam, 1e-3, batch 32) and evaluates on 1,000 test images: it clearly beats
the trivial 'dataset_mean' reconstruction and, just, bicubic x4 (the code's resolution).

Its last conv starts at zero (`zero_init`): the output is clip(tanh(.), 0, 1), so with the
default init about half the pixels start clipped at 0 with zero gradient, and on
Fashion-MNIST's black backgrounds Adam then drove every output to 0 (a dead, all-black
net); from zero the output starts at the clip boundary and grows where the image is bright.
Learning rates of 2e-3 and more also collapsed.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_cae"
  config.net = "cae"
  config.zero_init = ("d_up_conv_3/conv_2",)
  config.global_batch_size = 32
  config.num_steps = 150
  config.learning_rate = 1e-3
  config.schedule = "constant"  # a cosine decay over 150 steps ended ~1 dB lower
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50
  config.num_eval_examples = 1000
  return config
