"""AlexNet-bounded PAT on CIFAR-10 (Laidlaw et al. 2021): as `cifar10_pat` but the LPIPS
distance is a CifarAlexNet's (its 5 conv+ReLU outputs), bound 1.0. The trained classifier
is `cifar10_pat`'s, the paper's post-activation CIFAR ResNet-50 (Table 12, `cifar_resnet`).

Train the AlexNet first (`experiments/configs/cifar10_alexnet.py`):
  python -m experiments.train --config=experiments/configs/cifar10_alexnet.py \
      --workdir=runs/cifar10_alexnet
and point `method_kwargs.lpips_model` at its workdir (default runs/cifar10_alexnet).
"""

from experiments.configs import cifar10_pat


def get_config():
  config = cifar10_pat.get_config()
  config.method_kwargs.bound = 1.0
  config.method_kwargs.lpips_model = "runs/cifar10_alexnet"
  return config
