"""Quickstart: the paper's U-Net for image completion on Fashion-MNIST (a few min, 2 CPUs).

UNet() with the paper's widths (encoder 16, 32; bottleneck 64; decoder 32, 16): 58,049
parameters at one channel (58,627 at three). Inputs have 2-35% of their pixels zeroed,
the target is the clean image, the loss mean|.| + 0.05 mean(.^2). Adam, batch 128,
1 epoch, cosine from 1e-3 (3e-3, the paper's rate at batch 16384, made this net's output
collapse to black at batch 128 on Fashion-MNIST).
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_unet"
  config.net = "unet"
  # Its output conv starts at zero: from the net's own He-normal init the output clip
  # saturates for 25-95% of the pixels (zero gradient there), and Adam at 3e-3 then
  # collapsed it to an all-black output.
  config.zero_init = ("head",)
  config.num_epochs = 1.0
  config.learning_rate = 1e-3
  return config
