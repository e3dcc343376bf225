"""AdA(EDSR) on CIFAR-10 (Calian et al. 2022): PreActResNet-50, SGD Nesterov, batch 1024,
300 epochs, wd 1e-4, lr 0.1 scaled by max(lr * batch / 256, lr), cosine with 5 warm-up
epochs; nu 0.015, 10 FGSM steps of 1/4 the median block radius, SSIM threshold 0.3.

The EDSR backbone is our own x2 EDSR pretrained on CIFAR-10 (trained on first use into
runs/corruption_nets/cifar10_edsr; see configs/corruption_nets/cifar10_edsr.py). The paper
uses DeepAugment's published x4 EDSR weights: `experiments/cifar10_ada.py
--edsr_torch_weights=PATH` uses them. Other backbones: `--backbones=cae`, `--backbones=
edsr,cae,vqvae,unet` (AdA(All)), or configs/cifar10_ada_all.py.
"""

from experiments.configs import ada_backbones
from experiments.configs import cifar10_preact_resnet50


def get_config():
  config = cifar10_preact_resnet50.get_config()
  config.method = "ada"
  config.method_kwargs.backbones = (ada_backbones.backbone("edsr", "cifar10"),)
  config.method_kwargs.nu = 0.015
  config.method_kwargs.num_steps = 10
  config.method_kwargs.ssim_threshold = 0.3
  # Examples per nano-batch over all devices: 'auto' = the largest that fits half of each
  # accelerator's memory (adacorr.attacks.memory), 1 per device on CPU; or '8/device' (the
  # paper's).
  config.method_kwargs.chunk_size = "auto"
  return config
