r"""RLAT (Kireev et al. 2022) on CIFAR-10 with the paper's settings; see the config.

  python -m experiments.cifar10_rlat --workdir=runs/cifar10_rlat [--config=...] [--config.k=v]

Any other method config works too, e.g. --config=experiments/configs/cifar10_l2_at.py;
the Fashion-MNIST quickstart is experiments/configs/fashion_mnist_rlat.py.
"""

from experiments import train

if __name__ == "__main__":
  train.run_with_default_config("cifar10_rlat")
