"""A tiny, fast config for engine tests: SmallCNN on the synthetic dataset."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "synthetic"
  config.model = "small_cnn"
  config.model_kwargs.features = (8, 16)
  config.augment = "pad_crop_flip"
  config.augment_kwargs.pad = 2
  config.global_batch_size = 32
  config.num_steps = 24
  config.learning_rate = 0.05
  config.scale_learning_rate = False
  config.schedule = "cosine"
  config.warmup_epochs = 0.1
  config.log_every_steps = 4
  config.eval_every_steps = 12
  config.checkpoint_every_steps = 4
  config.keep_checkpoints = 2
  config.tensorboard = False
  config.prefetch = 0
  return config
