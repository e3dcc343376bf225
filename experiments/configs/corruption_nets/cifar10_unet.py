"""The paper's CIFAR-10 U-Net for image completion (Calian et al. 2022, App. E.6).

UNet(): encoder 16, 32; bottleneck 64; decoder 32, 16; 58,627 parameters at 3 channels.
Inputs have 2-35% of their pixels zeroed (a fraction drawn per image), the target is the
clean image, the loss mean|.| + 0.05 mean(.^2) ("the mean absolute pixel differences plus
the mean squared pixel differences scaled by 0.5 * 0.1"). Paper hyperparameters: Adam,
learning rate 3e-3, batch 16384, 90 epochs; decay read as cosine to 0 (see
cifar10_vqvae.py). No augmentation is mentioned.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_cifar10_config()
  config.name = "cifar10_unet"
  config.net = "unet"
  # Its output conv starts at zero: from the net's own He-normal init the output clip
  # saturates for 25-95% of the pixels (zero gradient there), and Adam at 3e-3 then
  # collapsed it to an all-black output.
  config.zero_init = ("head",)
  config.augment = "none"
  config.global_batch_size = 16384
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50
  return config
