"""Nominal PreActResNet-50 on CIFAR-10 with the AdA paper's settings (Calian et al. 2022,
App. E): SGD Nesterov, 300 epochs, batch 1024, weight decay 1e-4, lr 0.1 scaled by
max(lr * batch / 256, lr), cosine to 0 after 5 warm-up epochs."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "cifar10"
  config.model = "preact_resnet50"
  config.augment = "pad_crop_flip"
  config.global_batch_size = 1024
  config.num_epochs = 300.0
  config.learning_rate = 0.1
  config.scale_learning_rate = True
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.schedule = "cosine"
  config.warmup_epochs = 5.0
  return config
