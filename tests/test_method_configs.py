"""Every method config names a registered method, and every quickstart trains in the loop."""

import glob
import importlib
import math
import os

import pytest

from adacorr.train import loop

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "configs")
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
                 if not os.path.basename(p).startswith("_")
                 and "def get_config" in open(p, encoding="utf-8").read())
QUICKSTARTS = [c for c in CONFIGS if c.startswith("fashion_mnist_") and c != "fashion_mnist_base"]


def _config(name):
  return importlib.import_module(f"experiments.configs.{name}").get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_names_a_registered_method_and_model(name):
  config = _config(name)
  assert config.method in loop.LOSS_FACTORIES
  from adacorr import models
  assert config.model in models.MODELS


def test_every_method_has_a_quickstart():
  methods = {_config(c).method for c in QUICKSTARTS}
  assert set(loop.LOSS_FACTORIES) <= methods | {"nominal"}, set(loop.LOSS_FACTORIES) - methods


def _one_quickstart_per_method():
  chosen = {}
  for name in QUICKSTARTS:
    chosen.setdefault(_config(name).method, name)
  return sorted(chosen.values())


@pytest.mark.parametrize("name", _one_quickstart_per_method())
def test_quickstart_trains_a_few_steps(name, tmp_path):
  config = _config(name)
  # The same model, method and optimiser, on the tiny synthetic set for 3 steps.
  config.update(dict(dataset="synthetic", num_steps=3, log_every_steps=1, eval_every_steps=3,
                     checkpoint_every_steps=-1, tensorboard=False, prefetch=0,
                     global_batch_size=16))
  config.augment_kwargs.pad = 2
  if config.method == "ada":  # the same corruption nets, untrained (no pretraining here)
    config.method_kwargs.backbones = tuple(
        dict(net=b["net"], init="random",
             net_kwargs=dict(b["pretrain"]["net_kwargs"]) if b.get("pretrain") else {})
        for b in config.method_kwargs.backbones)
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 3 and summary["method"] == config.method
  assert math.isfinite(summary["train_loss"]) and 0.0 <= summary["test_accuracy"] <= 1.0
