"""Quickstart (`make demo`): AdA(EDSR) on real Fashion-MNIST in ~4 minutes on 2 CPU cores.

The SmallCNN of the nominal quickstart, trained with AdA on a very small x2 EDSR
(4,241 parameters; configs/corruption_nets/fashion_mnist_edsr_tiny.py), which is
pretrained on first use into runs/corruption_nets/fashion_mnist_edsr_tiny (~1 min) and
reused afterwards. AdA as in the paper (random init in the ball, FGSM steps of 1/4 the
median block radius x 10/M, per-block projection, SSIM line search at 0.3) with fewer
steps and a larger radius than CIFAR-10's (10 steps, nu 0.015) to fit the CPU budget;
the paper's ImageNet setting also uses 3 steps.
"""

from experiments.configs import ada_backbones
from experiments.configs import fashion_mnist_quickstart


def get_config():
  config = fashion_mnist_quickstart.get_config()
  config.method = "ada"
  config.method_kwargs.backbones = (
      ada_backbones.backbone("edsr", "fashion_mnist", config_name="fashion_mnist_edsr_tiny"),)
  config.method_kwargs.nu = 0.03
  config.method_kwargs.num_steps = 3
  config.method_kwargs.ssim_threshold = 0.3
  config.method_kwargs.chunk_size = "auto"  # 1 on CPU: see adacorr.methods.ada
  # ~38k AdA images (0.64 epochs) in batches of 64: ~4 min on 2 CPU cores.
  config.global_batch_size = 64
  config.num_steps = 600
  config.warmup_epochs = 0.05
  config.checkpoint_every_steps = 200
  return config
