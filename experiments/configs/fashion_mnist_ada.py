"""Quickstart (`make demo`): AdA(EDSR) on real Fashion-MNIST in ~4.5 minutes on 2 CPU cores.

The SmallCNN of the nominal quickstart, trained with AdA on a very small x2 EDSR
(1,113 parameters; configs/corruption_nets/fashion_mnist_edsr_tiny.py), which is
pretrained on first use into runs/corruption_nets/fashion_mnist_edsr_tiny (~1 min) and
reused afterwards, and applied as a near-identity (super-resolve, then downsample back;
unperturbed SSIM 0.96 to the clean images). AdA as in the paper (random init in the
ball, FGSM steps of 1/4 the median block radius x 10/M, one block per layer, SSIM line
search at 0.3) with CIFAR-10's relative radius nu = 0.015 and the ImageNet setting's 3
steps (step size x 10/3) to fit the CPU budget. configs/fashion_mnist_ada_nominal.py is
its nominal twin (`make demo` trains and compares both).
"""

from experiments.configs import ada_backbones
from experiments.configs import fashion_mnist_quickstart


def get_config():
  config = fashion_mnist_quickstart.get_config()
  config.method = "ada"
  config.method_kwargs.backbones = (
      ada_backbones.backbone("edsr", "fashion_mnist", config_name="fashion_mnist_edsr_tiny"),)
  config.method_kwargs.nu = 0.015
  config.method_kwargs.num_steps = 3
  config.method_kwargs.ssim_threshold = 0.3
  config.method_kwargs.chunk_size = "auto"  # 1/device on CPU: see adacorr.attacks.memory
  # ~26k AdA images (0.43 epochs) in batches of 64: ~4.5 min on 2 CPU cores.
  config.global_batch_size = 64
  config.num_steps = 400
  config.warmup_epochs = 0.05
  config.checkpoint_every_steps = 200
  return config
