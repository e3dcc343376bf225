"""Quickstart: self-bounded PAT (Fast-LPA, 10 steps, bound 0.5) on Fashion-MNIST, half an
epoch (234 steps) on 2 CPU cores.

The network is a small post-activation CIFAR ResNet ('cifar_resnet', the robustness
library's layout that Laidlaw et al. 2021 train, Table 12), so its LPIPS layers are block
outputs after ReLU as in the paper (App. H.1), not a PreActResNet's signed residual sums.
Sizes (not the paper's: a CPU quickstart): `fashion_mnist_base`'s width 16 and one block per
stage, with the library's `BasicBlock` (its ResNet-18 block) rather than ResNet-50's
bottleneck: the same depth and widths as the PreActResNet this quickstart used before, at
0.7x its step time (a bottleneck at width 16 took 1.9x, measured on the shared CPU).
"""

from experiments.configs import fashion_mnist_base


def get_config():
  config = fashion_mnist_base.get_config()
  config.method = "pat"
  config.method_kwargs.bound = 0.5      # paper App. F.3, self-bounded CIFAR-10 training bound
  config.method_kwargs.num_steps = 10   # paper Table 12, attack iterations (train)
  config.clip_grad_value = 1.0          # reference adv_train.py (clip_grad_value_ 1.0)
  config.num_epochs = 0.5
  # Post-activation CIFAR ResNet (robustness library; paper Table 12 / App. H.1 layers);
  # width 16 and stage_sizes (1, 1, 1, 1) come from fashion_mnist_base.
  config.model = "cifar_resnet"
  config.model_kwargs.block = "basic"   # quickstart size, see the docstring
  return config
