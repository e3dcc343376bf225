"""The AdA quickstart's corruption net: a very small EDSR x2 on Fashion-MNIST (~1 min, 2 CPUs).

EDSR(features=4, num_blocks=1): head conv 1->4, one residual block, body conv, upsampler
conv 4->16 + pixel shuffle x2, tail conv 4->1; 1,113 parameters. Pretraining fits x2
super-resolution of Fashion-MNIST (each 28x28 image downsampled x2, bicubic, and
super-resolved back; L1 loss); AdA applies it as a near-identity: super-resolve the 28x28
image to 56x56 and downsample back (`EDSR.resample='sr_then_down'`). Adam, batch 128,
2 epochs, cosine decay from 3e-3.

Why 4 features (8 before): applied this way the net runs at 28x28 and 56x56, and its cost
is quadratic in the width. In the pretraining's own evaluation (2,000 test images), 4
features give the unperturbed net SSIM 0.960 to the clean image and 8 features 0.955,
and an AdA attack step on a batch of 64 takes 0.58 s against 1.36 s (2 CPU cores).
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_edsr_tiny"
  config.net = "edsr"
  config.net_kwargs.features = 4
  config.net_kwargs.num_blocks = 1
  config.num_epochs = 2.0
  return config
