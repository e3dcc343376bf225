"""The nominal twin of the AdA demo (configs/fashion_mnist_ada.py): the same SmallCNN, data,
standard augmentation, steps, batch, schedule and seed, trained on the clean images only.
`make demo` (experiments/demo.py) trains both and compares them side by side.
"""

import ml_collections

from experiments.configs import fashion_mnist_ada


def get_config():
  config = fashion_mnist_ada.get_config()
  config.method = "nominal"
  config.method_kwargs = ml_collections.ConfigDict()
  return config
