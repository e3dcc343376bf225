"""Quickstart: SmallCNN on real Fashion-MNIST, a few minutes on 2 CPU cores (`make demo`)."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.model = "small_cnn"
  config.augment = "pad_crop_flip"
  config.global_batch_size = 128
  config.num_epochs = 5.0
  config.learning_rate = 0.05
  config.scale_learning_rate = False
  config.weight_decay = 5e-4
  config.schedule = "cosine"
  config.warmup_epochs = 0.2
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
