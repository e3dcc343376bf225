"""Nominal PreActResNet-18 on CIFAR-10 with the RLAT paper's settings (Kireev et al. 2022):
SGD momentum 0.9, weight decay 5e-4, lr 0.1, batch 128, 150 epochs, lr /10 at 34% and 67%."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "cifar10"
  config.model = "preact_resnet18"
  config.augment = "pad_crop_flip"
  config.global_batch_size = 128
  config.num_epochs = 150.0
  config.learning_rate = 0.1
  config.scale_learning_rate = False
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.schedule = "piecewise"
  config.piecewise_boundaries = (0.34, 0.67)
  config.piecewise_factor = 0.1
  return config
