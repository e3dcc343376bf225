"""AdA backbone specs for configs: which pretrained corruption net, and where its weights
come from (see `adacorr.run.corruption_nets.load_backbone`).

`backbone(net, dataset)` points at `<root>/<dataset>_<net>`, a run of
`python -m experiments.train_corruption_net` with the config `configs/corruption_nets/
<dataset>_<net>.py`; AdA trains it there first when the run is absent, and reuses it
afterwards. `torch_weights` uses DeepAugment's published EDSR / CAE weights instead (the
paper's choice for those two nets; they cannot be downloaded here).
"""

import importlib
import os

import ml_collections

# The Fashion-MNIST AdA configs' nets, sized for 2 CPU cores.
FASHION_MNIST_SMALL = {"edsr": "fashion_mnist_edsr_tiny", "cae": "fashion_mnist_cae_tiny"}

DEFAULT_ROOT = os.environ.get("ADACORR_CORRUPTION_NETS", os.path.join("runs", "corruption_nets"))
NETS = ("edsr", "cae", "vqvae", "unet")


def pretrain_config(name: str) -> ml_collections.ConfigDict:
  """The config `experiments/configs/corruption_nets/<name>.py`."""
  module = importlib.import_module(f"experiments.configs.corruption_nets.{name}")
  return module.get_config()


def backbone(net: str, dataset: str, *, root: str | None = None, torch_weights: str | None = None,
             config_name: str | None = None, **overrides) -> dict:
  """A backbone spec dict for `config.method_kwargs.backbones`."""
  if net not in NETS:
    raise ValueError(f"net={net!r} is not one of {NETS}.")
  if torch_weights:
    return dict(net=net, name=net, torch_weights=torch_weights, **overrides)
  config_name = config_name or f"{dataset}_{net}"
  return dict(net=net, name=net, workdir=os.path.join(root or DEFAULT_ROOT, config_name),
              pretrain=pretrain_config(config_name), **overrides)


def all_backbones(dataset: str, *, config_names: dict | None = None, **kwargs) -> tuple:
  """AdA(All): one spec per net of `NETS`; `config_names` maps a net to the pretraining
  config it uses instead of `<dataset>_<net>` (e.g. {'edsr': 'fashion_mnist_edsr_tiny'})."""
  config_names = config_names or {}
  return tuple(backbone(net, dataset, config_name=config_names.get(net), **kwargs)
               for net in NETS)
