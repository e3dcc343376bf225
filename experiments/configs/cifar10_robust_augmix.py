"""RobustAugMix on CIFAR-10 (Martinez et al. 2022): CE(clean) + 12 * JSD(clean, AugMix,
l2 PGD), PGD eps 1.0, 7 steps of 2.5 * eps / 7, random start; 100 epochs, batch 128, SGD
Nesterov, cosine lr 0.1, pad-crop + flip.

The paper trains a "50-2 Wide ResNet"; we use WRN-40-2 (AugMix's CIFAR network; depth 50
is not 6n + 4 for our CIFAR WideResNet). `--config.model_kwargs.depth/width` change it."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = "cifar10"
  config.model = "wide_resnet"
  config.model_kwargs.depth = 40
  config.model_kwargs.width = 2
  config.augment = "pad_crop_flip"
  config.global_batch_size = 128
  config.num_epochs = 100.0
  config.learning_rate = 0.1
  config.scale_learning_rate = False
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 5e-4
  config.schedule = "cosine"
  config.method = "robust_augmix"
  config.method_kwargs.eps = 1.0
  config.method_kwargs.num_steps = 7
  config.method_kwargs.random_init = True
  config.method_kwargs.jsd_weight = 12.0
  return config
