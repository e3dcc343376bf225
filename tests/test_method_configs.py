"""Every method config names a registered method, and every quickstart trains in the loop."""

import glob
import importlib
import json
import math
import os

import numpy as np
import pytest

from adacorr import methods
from adacorr import run

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
  assert config.method in methods.FACTORIES
  from adacorr import models
  assert config.model in models.MODELS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_the_schema(name):
  """Every key is a key of configs/default.py (or inside a free-form dict) and every value
  is one the training takes (`experiments.configs.schema`), AdA's pretraining configs
  included."""
  from experiments.configs import schema
  schema.check_classifier_config(_config(name))


CORRUPTION_NET_CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(CONFIG_DIR, "corruption_nets", "*.py"))
    if not os.path.basename(p).startswith("_"))


@pytest.mark.parametrize("name", CORRUPTION_NET_CONFIGS)
def test_corruption_net_config_passes_the_schema(name):
  from experiments.configs import schema
  config = importlib.import_module(f"experiments.configs.corruption_nets.{name}").get_config()
  schema.check_corruption_net_config(config)


def test_every_method_has_a_quickstart():
  methods_ = {_config(c).method for c in QUICKSTARTS}
  assert set(methods.FACTORIES) <= methods_ | {"nominal"}, set(methods.FACTORIES) - methods_


def _is_combination(config):
  """AugMix or ANT + RLAT inside another method, or DeepAugment data."""
  kwargs = config.method_kwargs
  return bool(config.get("deepaugment_dirs")) or "augmix" in kwargs or "rlat" in kwargs


def _one_quickstart_per_method():
  chosen = {}  # the plain method's quickstart, not a combination's
  for name in sorted(QUICKSTARTS, key=lambda n: _is_combination(_config(n))):
    chosen.setdefault(_config(name).method, name)
  return sorted(chosen.values())


def _combinations():
  chosen = set(_one_quickstart_per_method())
  return [c for c in QUICKSTARTS if c not in chosen and _is_combination(_config(c))]


def _stand_in_copies(directory, count):
  """DeepAugment-copy directories of the synthetic train set (inverted images)."""
  from adacorr import data as data_lib
  from adacorr.data import deepaugment as deepaugment_data
  source = data_lib.load_split("synthetic", "train")
  images, labels = source.get(np.arange(source.num_examples))
  dirs = []
  for i in range(count):
    d = os.path.join(directory, f"copy{i}")
    os.makedirs(d)
    np.save(os.path.join(d, deepaugment_data.IMAGES_FILE), (255 - images).astype(np.uint8))
    np.save(os.path.join(d, deepaugment_data.LABELS_FILE), labels)
    with open(os.path.join(d, deepaugment_data.INFO_FILE), "w", encoding="utf-8") as f:
      json.dump(dict(net="edsr", dataset="synthetic", count=int(len(labels)), seed=i,
                     num_classes=10, image_shape=list(images.shape[1:])), f)
    dirs.append(d)
  return tuple(dirs)


def _train_quickstart(name, tmp_path):
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
    config.method_kwargs.chunk_size = "none"  # one vmapped pass: compiles much faster on CPU
  if config.get("deepaugment_dirs"):  # stand-ins for the stored copies
    config.deepaugment_dirs = _stand_in_copies(str(tmp_path / "deepaugment"),
                                               len(config.deepaugment_dirs))
  summary = run.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["steps"] == 3 and summary["method"] == config.method
  assert math.isfinite(summary["train_loss"]) and 0.0 <= summary["test_accuracy"] <= 1.0
  return config


@pytest.mark.parametrize("name", _one_quickstart_per_method())
def test_quickstart_trains_a_few_steps(name, tmp_path):
  _train_quickstart(name, tmp_path)


@pytest.mark.parametrize("name", _combinations())
def test_combination_quickstart_trains_a_few_steps(name, tmp_path):
  config = _train_quickstart(name, tmp_path)
  assert _is_combination(config)


def test_every_combination_of_the_papers_has_a_quickstart():
  """AugMix (+JSD), DeepAugment, RobustAugMix, ANT and the combination rows of the AdA and
  RLAT papers each have a Fashion-MNIST quickstart (and a CIFAR-10 config)."""
  rows = ["augmix", "robust_augmix", "ant", "deepaugment", "deepaugment_augmix",
          "ada_augmix", "ada_deepaugment_augmix", "augmix_jsd_rlat", "augmix_rlat",
          "deepaugment_rlat", "ant_rlat", "ada_all_augmix_deepaugment"]
  for row in rows:
    assert f"fashion_mnist_{row}" in QUICKSTARTS, row
    assert f"cifar10_{row}" in CONFIGS, row


def test_deepaugment_configs_keep_the_steps_and_the_warm_up_of_their_base():
  """Clean + 2 copies make an epoch 3x longer: epochs AND warm-up epochs shrink 3x, so the
  run has its base's number of steps and of warm-up steps (issue 14, item 6)."""
  from experiments.configs import fashion_mnist_base, fashion_mnist_deepaugment
  base, da = fashion_mnist_base.get_config(), fashion_mnist_deepaugment.get_config()
  factor = 1 + len(da.deepaugment_dirs)
  assert factor == 3
  assert da.num_epochs * factor == pytest.approx(base.num_epochs)
  assert da.warmup_epochs * factor == pytest.approx(base.warmup_epochs)
  assert base.warmup_epochs > 0  # the check is not vacuous


def test_imagenet_ada_config_is_the_papers_and_one_step_lowers_on_cpu():
  """App. E's ImageNet AdA (on ImageNet-100): the hyperparameters, and one full train step
  (ResNet-50 + the full EDSR at 128x128 crops, untrained weights) builds and lowers."""
  import jax
  import jax.numpy as jnp
  from adacorr import data as data_lib
  from adacorr.methods import ada as ada_method
  from adacorr.train import loop, optim, state as state_lib, step as step_lib
  from adacorr.data import augment as augment_lib
  config = _config("imagenet100_ada")
  kw = config.method_kwargs
  assert (config.model, config.global_batch_size, config.num_epochs) == ("resnet50", 4096, 90.0)
  assert config.weight_decay == 5e-4 and config.augment_kwargs.size == 128
  assert (kw.num_steps, kw.ssim_threshold, kw.nu) == (3, 0.7, 0.015)
  assert ada_method.resolve_chunk_size(kw.chunk_size) == jax.device_count()  # 1 per device
  (spec,) = kw.backbones
  assert spec["net"] == "edsr" and spec["pretrain"]["dataset"] == "imagenet100"
  kw.backbones = (dict(net="edsr", init="random"),)  # the same net, untrained
  info = data_lib.DATASETS[config.dataset]
  model = loop.build_model(config, info)
  loss_fn = run.make_method(model, config)
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10,
                                                        num_steps=900))
  shape = (1, 144, 144, 3)
  state = jax.eval_shape(lambda: state_lib.create_train_state(
      model, tx, jax.random.PRNGKey(0), shape[1:]))
  train_step = step_lib.make_train_step(
      loss_fn, tx, augment_fn=augment_lib.get_augment(config.augment, **config.augment_kwargs))
  batch = {"image": jax.ShapeDtypeStruct(shape, jnp.float32),  # as the loop feeds it
           "label": jax.ShapeDtypeStruct(shape[:1], jnp.int32)}
  lowered = jax.jit(train_step).lower(state, batch)
  assert "convolution" in lowered.as_text()
