"""The full EDSR-baseline x2 trained on ImageNet-100 (every 10th ImageNet class), for AdA on
ImageNet (configs/imagenet100_ada.py). The paper uses DeepAugment's released x4 EDSR
weights (`python -m experiments.cifar10_ada --edsr_torch_weights=PATH` with that config);
this trains the same architecture ourselves, with CIFAR-10's settings (ours, not the
paper's): Adam, learning rate 1e-4, batch 256, EDSR's L1 loss, random flips.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_imagenet100_config()
  config.name = "imagenet100_edsr"
  config.net = "edsr"
  config.global_batch_size = 256
  config.learning_rate = 1e-4
  config.num_epochs = 30.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
