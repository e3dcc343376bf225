"""Nominal ResNet-50 on ImageNet-100 (every 10th ImageNet class), AdA paper's ImageNet
settings scaled to 100 classes: SGD Nesterov, 90 epochs, weight decay 5e-4, lr 0.1 scaled by
the linear rule, cosine after 5 warm-up epochs, 128x128 random-resized crops + flip."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "imagenet100"
  config.model = "resnet50"
  config.augment = "random_resized_crop_flip"
  config.augment_kwargs.size = 128      # of the 144x144 images adacorr.data provides
  config.eval_center_crop = 128
  config.global_batch_size = 1024
  config.num_epochs = 90.0
  config.learning_rate = 0.1
  config.scale_learning_rate = True
  config.nesterov = True
  config.weight_decay = 5e-4
  config.schedule = "cosine"
  config.warmup_epochs = 5.0
  config.compute_dtype = "bfloat16"
  return config
