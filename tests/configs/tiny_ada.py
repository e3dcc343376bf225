"""The tiny engine-test config trained with AdA: an untrained x2 EDSR (4 features, one
block) as the corruption net, 2 AdA steps, whole-batch (vmapped) per-example weights; one
training step (a second would start AdA's signed weight steps from BatchNorm statistics
that differ in the last bit between reduction orders, and sign flips then move the
parameters by ~1e-4: the 2-process test compares one step)."""

from tests.configs import tiny_synthetic


def get_config():
  config = tiny_synthetic.get_config()
  config.method = "ada"
  config.method_kwargs.backbones = (
      dict(net="edsr", init="random", net_kwargs=dict(num_blocks=1, features=4)),)
  config.method_kwargs.nu = 0.1
  config.method_kwargs.num_steps = 2
  config.method_kwargs.chunk_size = "none"
  config.num_steps = 1
  config.warmup_epochs = 0.0  # the one step updates the parameters
  config.log_every_steps = 1
  config.eval_every_steps = -1
  config.checkpoint_every_steps = -1
  return config
