r"""Perceptual Adversarial Training (Laidlaw et al. 2021) on CIFAR-10; see the config.

  python -m experiments.cifar10_pat --workdir=runs/cifar10_pat [--config=...] [--config.k=v]

Self-bounded by default (experiments/configs/cifar10_pat.py). AlexNet-bounded:
  python -m experiments.train --config=experiments/configs/cifar10_alexnet.py \
      --workdir=runs/cifar10_alexnet
  python -m experiments.cifar10_pat --config=experiments/configs/cifar10_pat_alexnet.py \
      --workdir=runs/cifar10_pat_alexnet
The Fashion-MNIST quickstart is experiments/configs/fashion_mnist_pat.py. Evaluate the
LPIPS robustness (LPA accuracy vs bound) with `python -m experiments.evaluate`.
"""

from experiments import train

if __name__ == "__main__":
  train.run_with_default_config("cifar10_pat")
