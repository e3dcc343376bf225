"""The full compressive autoencoder trained on ImageNet-100 (every 10th ImageNet class;
144x144 images), for AdA on ImageNet (configs/imagenet100_ada.py). The paper uses
DeepAugment's released CAE weights (`--cae_torch_weights=PATH`); this trains the same
architecture ourselves with cifar10_cae's settings (ours, not the paper's), for 30 epochs
of the larger images.
"""

from experiments.configs.corruption_nets import cifar10_cae


def get_config():
  config = cifar10_cae.get_config()
  config.name = "imagenet100_cae"
  config.dataset = "imagenet100"
  config.eval_batch_size = 256
  config.num_epochs = 30.0
  return config
