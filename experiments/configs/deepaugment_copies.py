"""DeepAugment copies for configs: where `experiments/make_deepaugment.py` writes them.

`dirs(dataset)` are `<root>/<dataset>_<net>` for the EDSR and CAE copies (root
$ADACORR_DEEPAUGMENT or runs/deepaugment). Make them first, e.g. for Fashion-MNIST:

  python -m experiments.make_deepaugment --dataset=fashion_mnist --net=edsr \
      --config_name=fashion_mnist_edsr_tiny --out_dir=runs/deepaugment/fashion_mnist_edsr_tiny
  python -m experiments.make_deepaugment --dataset=fashion_mnist --net=cae \
      --config_name=fashion_mnist_cae --out_dir=runs/deepaugment/fashion_mnist_cae

(the corruption nets are pretrained on first use); `experiments/train.py` makes missing
copies named here on first use. For CIFAR-10, make them beforehand with DeepAugment's
published weights `--torch_weights=...` (the paper's choice) to use those. Training on clean + two
copies makes an epoch three times as long; the DeepAugment configs divide `num_epochs`
and `warmup_epochs` by `1 + len(dirs)` so that they take as many steps, and warm up over
as many steps, as the run without DeepAugment.
"""

import os

DEFAULT_ROOT = os.environ.get("ADACORR_DEEPAUGMENT", os.path.join("runs", "deepaugment"))
NAMES = {"fashion_mnist": ("fashion_mnist_edsr_tiny", "fashion_mnist_cae"),
         "cifar10": ("cifar10_edsr", "cifar10_cae")}


def dirs(dataset: str, root: str | None = None) -> tuple[str, ...]:
  """The EDSR and CAE copy directories of `dataset`."""
  if dataset not in NAMES:
    raise ValueError(f"dataset={dataset!r} has no DeepAugment copies named; known: "
                     f"{sorted(NAMES)}.")
  return tuple(os.path.join(root or DEFAULT_ROOT, name) for name in NAMES[dataset])


def missing(config) -> list[dict]:
  """`make_deepaugment.ensure_copy` keywords for each copy of `config` that is absent and
  named here (made on first use by experiments/train.py)."""
  out = []
  for directory in config.get("deepaugment_dirs") or ():
    name = os.path.basename(os.path.normpath(directory))
    if name not in NAMES.get(config.dataset, ()) or os.path.isfile(
        os.path.join(directory, "info.json")):
      continue
    out.append(dict(out_dir=directory, dataset=config.dataset, config_name=name,
                    net="cae" if "_cae" in name else "edsr"))
  return out


def add(config):
  """Turns DeepAugment on in `config`, keeping its number of training and warm-up steps."""
  config.deepaugment_dirs = dirs(config.dataset)
  factor = 1 + len(config.deepaugment_dirs)  # an epoch of clean + copies is this much longer
  if config.get("num_steps", -1) <= 0:
    config.num_epochs = config.num_epochs / factor
  config.warmup_epochs = config.get("warmup_epochs", 0.0) / factor  # epochs scale steps too
  return config
