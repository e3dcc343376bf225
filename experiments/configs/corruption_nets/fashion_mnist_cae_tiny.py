"""The compressive autoencoder at an eighth of the width (`CAE(features=16)`: 48,657
parameters at one channel, ~1/46 of DeepAugment's) on Fashion-MNIST, for the
`fashion_mnist` reproduction suite's AdA(CAE) and AdA(All) on 2 CPU cores. AdA gives every
example its own copy of the weights, and on XLA:CPU that runs one example at a time: the
quarter-width CAE (fashion_mnist_cae_small.py) cost ~8 s per AdA step of 128 there alone,
~16 s beside a second run (RESULTS.md), i.e. ~40 min of a 150-step run. Same architecture
ratios, code (7x7x32 bits), loss, zero-initialised last conv and optimiser as
configs/corruption_nets/fashion_mnist_cae.py, trained 8x its steps: 1200 steps take
~1.5 min and reach test PSNR 18.3 dB / SSIM 0.61, a little above the quarter-width's 17.6 /
0.60 at 600 steps (bicubic x4: 15.9 / 0.44)."""

from experiments.configs.corruption_nets import fashion_mnist_cae


def get_config():
  config = fashion_mnist_cae.get_config()
  config.name = "fashion_mnist_cae_tiny"
  config.net_kwargs.features = 16
  config.num_steps = 1200
  config.checkpoint_every_steps = 400
  return config
