"""The full EDSR-baseline x2 (1,369,859 parameters at 3 channels), trained on CIFAR-10.

The paper uses DeepAugment's released EDSR weights (`adacorr.models.corruption.
convert_torch`); this config trains the same architecture ourselves instead:
EDSR() with 64 features and 16 residual blocks downsamples each 32x32 image x2 (bicubic)
and super-resolves it back, with EDSR's L1 loss, i.e. x2 super-resolution of CIFAR-10.
Hyperparameters are ours (not from the paper): Adam, learning rate 1e-4 (EDSR's), batch
256, 90 epochs, cosine decay, random flips.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_base_config()
  config.name = "cifar10_edsr"
  config.net = "edsr"
  config.dataset = "cifar10"
  config.augment = "flip"
  config.global_batch_size = 256
  config.num_epochs = 90.0
  config.learning_rate = 1e-4
  config.scale_learning_rate = False
  config.schedule = "cosine"
  config.warmup_epochs = 0.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.eval_every_epochs = 10.0
  config.eval_batch_size = 1024
  return config
