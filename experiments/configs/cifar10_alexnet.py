"""The CIFAR-10 AlexNet that bounds AlexNet-bounded PAT and LPA/PPGD evaluation (Laidlaw
et al. 2021, `CifarAlexNet`), trained nominally. The paper does not give its training
recipe; ours: SGD momentum 0.9, lr 0.01 (no BatchNorm: 0.1 diverges), cosine, 100 epochs,
batch 128, weight decay 5e-4, pad-crop-flip augmentation."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "cifar10"
  config.model = "cifar_alexnet"
  config.augment = "pad_crop_flip"
  config.global_batch_size = 128
  config.num_epochs = 100.0
  config.learning_rate = 0.01
  config.scale_learning_rate = False
  config.nesterov = False
  config.weight_decay = 5e-4
  config.schedule = "cosine"
  config.warmup_epochs = 1.0
  return config
