r"""RLAT (Kireev et al. 2022) on CIFAR-10 with the paper's settings; see the config.

  python experiments/cifar10_rlat.py --workdir=runs/cifar10_rlat [--config=...] [--config.k=v]

Any other method config works too, e.g. --config=experiments/configs/cifar10_l2_at.py;
the Fashion-MNIST quickstart is experiments/configs/fashion_mnist_rlat.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train  # noqa: E402  (experiments/train.py: flags, main)

if __name__ == "__main__":
  train.run_with_default_config(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "cifar10_rlat.py"))
