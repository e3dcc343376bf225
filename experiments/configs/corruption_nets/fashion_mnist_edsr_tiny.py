"""The AdA quickstart's corruption net: a very small EDSR x2 on Fashion-MNIST (~1 min, 2 CPUs).

EDSR(features=8, num_blocks=1): head conv 1->8, one residual block, body conv, upsampler
conv 8->32 + pixel shuffle x2, tail conv 8->1; 4,241 parameters. With `same_size=True`
it downsamples each 28x28 image x2 (bicubic) and super-resolves it back, so training
`EDSR()(x) ~ x` (L1 loss) is x2 super-resolution of Fashion-MNIST. Adam, batch 128,
2 epochs, cosine decay from 3e-3.
"""

from experiments.configs import corruption_nets


def get_config():
  config = corruption_nets.get_fashion_mnist_config()
  config.name = "fashion_mnist_edsr_tiny"
  config.net = "edsr"
  config.net_kwargs.features = 8
  config.net_kwargs.num_blocks = 1
  config.num_epochs = 2.0
  return config
