"""AdA(EDSR) on ImageNet-100 with the paper's ImageNet settings (Calian et al. 2022, App. E):
ResNet-50, 128x128 random-resized crops (of the 144x144 images) + flip, batch 4096, SGD
Nesterov, weight decay 5e-4, 90 epochs, cosine after 5 warm-up epochs, lr 0.1 scaled by the
linear rule; AdA with M = 3 steps (step size x10/3, the default rule), nu 0.015, SSIM
threshold t = 0.7 and nano-batches of 1 example per device.

ImageNet-100 (every 10th class) stands in for ImageNet-1k, which this project's pipeline
does not load. The EDSR backbone is our own x2 EDSR pretrained on ImageNet-100
(configs/corruption_nets/imagenet100_edsr.py, on first use); the paper uses DeepAugment's
x4 EDSR: `python -m experiments.cifar10_ada --config=experiments/configs/imagenet100_ada.py
--edsr_torch_weights=PATH`. `--backbones=edsr,cae` gives AdA on both nets.
"""

from experiments.configs import ada_backbones
from experiments.configs import imagenet100_resnet50


def get_config():
  config = imagenet100_resnet50.get_config()
  config.global_batch_size = 4096
  config.method = "ada"
  config.method_kwargs.backbones = (ada_backbones.backbone("edsr", "imagenet100"),)
  config.method_kwargs.nu = 0.015
  config.method_kwargs.num_steps = 3    # the default step size scales by 10 / 3
  config.method_kwargs.ssim_threshold = 0.7
  config.method_kwargs.chunk_size = "1/device"  # the paper's ImageNet nano-batch
  return config
