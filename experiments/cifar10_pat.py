r"""Perceptual Adversarial Training (Laidlaw et al. 2021) on CIFAR-10; see the config.

  python experiments/cifar10_pat.py --workdir=runs/cifar10_pat [--config=...] [--config.k=v]

Self-bounded by default (experiments/configs/cifar10_pat.py). AlexNet-bounded:
  python experiments/train.py --config=experiments/configs/cifar10_alexnet.py \
      --workdir=runs/cifar10_alexnet
  python experiments/cifar10_pat.py --config=experiments/configs/cifar10_pat_alexnet.py \
      --workdir=runs/cifar10_pat_alexnet
The Fashion-MNIST quickstart is experiments/configs/fashion_mnist_pat.py. Evaluate the
LPIPS robustness (LPA accuracy vs bound) with experiments/evaluate.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train  # noqa: E402  (experiments/train.py: flags, main)

if __name__ == "__main__":
  train.run_with_default_config(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "cifar10_pat.py"))
