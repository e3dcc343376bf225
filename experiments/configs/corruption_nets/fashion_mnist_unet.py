"""Quickstart: the paper's U-Net for image completion on Fashion-MNIST (a few min, 2 CPUs).

UNet() with the paper's widths (encoder 16, 32; bottleneck 64; decoder 32, 16): 58,049
parameters at one channel (58,627 at three). Inputs have 2-35% of their pixels zeroed,
the target is the clean image, the loss mean|.| + 0.05 mean(.^2). Adam, batch 128,
1 epoch, cosine from 1e-3 (3e-3, the paper's rate at batch 16384, made this net's output
collapse to black at batch 128 on Fashion-MNIST).
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_base_config()
  config.name = "fashion_mnist_unet"
  config.net = "unet"
  # Its residual head starts at zero: with the net's own He-normal init the residual
  # saturates the output clip for 25-95% of the pixels (zero gradient there), and Adam at
  # 3e-3 then collapsed it to an all-black output.
  config.zero_init = ("head",)
  config.dataset = "fashion_mnist"
  config.augment = "flip"
  config.global_batch_size = 128
  config.num_epochs = 1.0
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_epochs = 0.0
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.num_eval_examples = 2000
  return config
