"""The full EDSR-baseline x2 (1,369,859 parameters at 3 channels), trained on CIFAR-10.

The paper uses DeepAugment's released EDSR weights (`adacorr.models.corruption.
convert_torch`); this config trains the same architecture ourselves instead:
EDSR() with 64 features and 16 residual blocks, pretrained on x2 super-resolution of
CIFAR-10 (each 32x32 image downsampled x2, bicubic, and super-resolved back; EDSR's L1
loss). AdA applies it as a near-identity: super-resolve 32 -> 64, downsample back to 32
(`EDSR.resample='sr_then_down'`).
Hyperparameters are ours (not from the paper): Adam, learning rate 1e-4 (EDSR's), batch
256, 90 epochs, cosine decay, random flips.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_cifar10_config()
  config.name = "cifar10_edsr"
  config.net = "edsr"
  config.global_batch_size = 256
  config.learning_rate = 1e-4
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
