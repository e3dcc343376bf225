r"""AdA (Calian et al. 2022) on CIFAR-10 with the paper's defaults; see configs/cifar10_ada.py.

  python -m experiments.cifar10_ada --workdir=runs/cifar10_ada \
      [--backbones=edsr | edsr,cae,vqvae,unet] [--nu=0.015] [--ada_steps=10] \
      [--ssim_threshold=0.3] [--edsr_torch_weights=PATH] [--cae_torch_weights=PATH] \
      [--chunk_size=auto|none|N] [--config=...] [--config.k=v]

Backbones are pretrained on first use (`python -m experiments.train_corruption_net` with
configs/corruption_nets/<dataset>_<net>.py) into --corruption_net_dir and reused after.
The Fashion-MNIST quickstart (`make demo`) is --config=experiments/configs/fashion_mnist_ada.py.
Rerunning with the same --workdir resumes from the latest checkpoint.
"""

from absl import flags

from experiments import train
from experiments.configs import ada_backbones

flags.DEFINE_list("backbones", None, "Corruption nets, e.g. 'edsr' or 'edsr,cae,vqvae,unet' "
                  "(AdA(All)); default: the config's.")
flags.DEFINE_float("nu", None, "Relative perturbation radius (default: the config's, 0.015).")
flags.DEFINE_integer("ada_steps", None, "AdA ascent steps (default: the config's, 10).")
flags.DEFINE_float("ssim_threshold", None, "SSIM line-search threshold (default 0.3); a "
                   "negative value turns the line search off.")
flags.DEFINE_string("chunk_size", None, "Examples per nano-batch over all devices: 'auto' "
                    "(the largest that fits half the device's memory; 1/device on CPU), "
                    "'N/device', 'none' (whole batch) or N.")
flags.DEFINE_string("corruption_net_dir", None, "Where pretrained corruption nets live / are "
                    f"trained (default {ada_backbones.DEFAULT_ROOT}).")
flags.DEFINE_string("edsr_torch_weights", None, "DeepAugment's EDSR x4 PyTorch weights.")
flags.DEFINE_string("cae_torch_weights", None, "DeepAugment's CAE PyTorch weights.")
FLAGS = flags.FLAGS


def apply_flags(config) -> None:
  """Writes the AdA flags into `config.method_kwargs`."""
  kw = config.method_kwargs
  with config.unlocked():
    if FLAGS.backbones or FLAGS.corruption_net_dir or FLAGS.edsr_torch_weights \
        or FLAGS.cae_torch_weights:
      names = FLAGS.backbones or [b["net"] for b in kw.backbones]
      weights = {"edsr": FLAGS.edsr_torch_weights, "cae": FLAGS.cae_torch_weights}
      kw.backbones = tuple(
          ada_backbones.backbone(n, config.dataset, root=FLAGS.corruption_net_dir,
                                 torch_weights=weights.get(n)) for n in names)
    if FLAGS.nu is not None:
      kw.nu = FLAGS.nu
    if FLAGS.ada_steps is not None:
      kw.num_steps = FLAGS.ada_steps
    if FLAGS.ssim_threshold is not None:
      kw.ssim_threshold = None if FLAGS.ssim_threshold < 0 else FLAGS.ssim_threshold
    if FLAGS.chunk_size is not None:
      kw.chunk_size = str(FLAGS.chunk_size)


def main(argv):
  apply_flags(FLAGS.config)
  train.main(argv)


if __name__ == "__main__":
  train.run_with_default_config("cifar10_ada", main)
