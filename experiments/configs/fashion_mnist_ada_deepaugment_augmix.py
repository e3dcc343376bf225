"""Quickstart: AdA(EDSR) + DeepAugment + AugMix on Fashion-MNIST: the AdA demo on clean +
DeepAugment samples with AugMix last (App. E.5)."""

from experiments.configs import deepaugment_copies
from experiments.configs import fashion_mnist_ada_augmix


def get_config():
  return deepaugment_copies.add(fashion_mnist_ada_augmix.get_config())
