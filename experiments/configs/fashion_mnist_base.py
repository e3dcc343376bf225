"""Base for the Fashion-MNIST method quickstarts: a small PreActResNet (width 16, one block
per stage, so RLAT's six perturbation points exist) for a few minutes on 2 CPU cores."""

from experiments.configs import fashion_mnist_quickstart


def get_config():
  config = fashion_mnist_quickstart.get_config()
  config.model = "preact_resnet"
  config.model_kwargs.width = 16
  config.model_kwargs.stage_sizes = (1, 1, 1, 1)
  config.num_epochs = 1.0
  config.learning_rate = 0.1
  config.warmup_epochs = 0.1
  return config
