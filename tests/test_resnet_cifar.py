"""The robustness library's post-activation CIFAR ResNet (`adacorr.models.resnet_cifar`), the
network of self-bounded PAT (Laidlaw et al. 2021): parameter count, LPIPS layers after ReLU,
the PAT configs that use it, and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import perceptual
from adacorr.models import get_model
from adacorr.models.resnet_cifar import CifarResNet, CifarResNet18, CifarResNet50
from adacorr.train import loop
from adacorr import data as data_lib
from experiments.configs import cifar10_pat, cifar10_pat_alexnet, fashion_mnist_pat
from tests.flat_init import flat_init, uniform

KEY = jax.random.key(0)


def _param_shapes(model, shape):
  return jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))["params"]


def _init(model, shape, seed):
  """flat_init's variables without 'perturbations' (flat_init fills them with noise; a
  model adds them at its marked points when the collection is passed)."""
  variables = flat_init(model, shape, seed=seed)
  return {k: v for k, v in variables.items() if k != "perturbations"}


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def test_resnet50_parameter_count_is_the_papers():
  """robustness `cifar_models.ResNet50(num_classes=10)`: 23,520,842 parameters (Laidlaw et
  al. 2021, Table 12), counted by hand below (conv kernels, BN scale + bias, dense weight
  + bias; BN running statistics are not parameters):

  stem   conv 3x3x3x64 = 1,728; BN(64) 128                                      1,856
  Bottleneck(c_in, p), output 4p: conv1 c_in p + BN 2p, conv2 9 p^2 + BN 2p,
  conv3 4p^2 + BN 8p; projection shortcut (first block of a stage) 4p c_in + BN 8p.
  stage1 p=64:  block1 (c_in 64)  4,096+128+36,864+128+16,384+512+16,384+512 = 75,008
                blocks 2-3 (c_in 256) 16,384+128+36,864+128+16,384+512 = 70,400 each
                                                                              215,808
  stage2 p=128: block1 (c_in 256)  32,768+256+147,456+256+65,536+1,024
                                   +131,072+1,024 = 379,392
                blocks 2-4 (c_in 512) 65,536+256+147,456+256+65,536+1,024 = 280,064 each
                                                                            1,219,584
  stage3 p=256: block1 (c_in 512)  131,072+512+589,824+512+262,144+2,048
                                   +524,288+2,048 = 1,512,448
                blocks 2-6 (c_in 1024) 262,144+512+589,824+512+262,144+2,048
                                   = 1,117,184 each                         7,098,368
  stage4 p=512: block1 (c_in 1024) 524,288+1,024+2,359,296+1,024+1,048,576+4,096
                                   +2,097,152+4,096 = 6,039,552
                blocks 2-3 (c_in 2048) 1,048,576+1,024+2,359,296+1,024+1,048,576
                                   +4,096 = 4,462,592 each                 14,964,736
  head   dense 2048 x 10 + 10                                                  20,490
  total                                                                    23,520,842
  """
  params = _param_shapes(CifarResNet50(), (1, 32, 32, 3))
  assert _count(params) == 23_520_842
  by_part = {}
  for name, sub in params.items():
    part = name.split("_")[0]  # stem_conv/stem_bn -> stem, stage1_block2 -> stage1
    by_part[part] = by_part.get(part, 0) + _count(sub)
  assert by_part == {"stem": 1_856, "stage1": 215_808, "stage2": 1_219_584,
                     "stage3": 7_098_368, "stage4": 14_964_736, "head": 20_490}
  # The first block of a stage projects its shortcut (conv + BN); the others do not.
  assert set(params["stage2_block1"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                                          "shortcut_conv", "shortcut_bn"}
  assert set(params["stage2_block2"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
  # The default CifarResNet is that network; the registry builds it by name.
  assert _count(_param_shapes(CifarResNet(), (1, 32, 32, 3))) == 23_520_842
  assert isinstance(get_model("cifar_resnet"), CifarResNet)


def test_resnet18_parameter_count():
  """robustness `cifar_models.ResNet18` (BasicBlock x (2, 2, 2, 2)): 11,173,962, the
  kuangliu/pytorch-cifar ResNet18 count. Per part (stage K: block1's two 3x3 convs + BNs,
  its projection shortcut conv1x1 + BN, block2's two 3x3 convs + BNs):
  stem 1,728 + 128 = 1,856; stage1 2 x 2 x (36,864 + 128) = 147,968;
  stage2 221,696 + 8,448 + 295,424 = 525,568; stage3 885,760 + 33,280 + 1,180,672 =
  2,099,712; stage4 3,540,992 + 132,096 + 4,720,640 = 8,393,728; head 512 x 10 + 10 =
  5,130."""
  params = _param_shapes(CifarResNet18(), (1, 32, 32, 3))
  assert _count(params) == 11_173_962
  by_part = {}
  for name, sub in params.items():
    part = name.split("_")[0]
    by_part[part] = by_part.get(part, 0) + _count(sub)
  assert by_part == {"stem": 1_856, "stage1": 147_968, "stage2": 525_568,
                     "stage3": 2_099_712, "stage4": 8_393_728, "head": 5_130}


def test_marked_points_and_lpips_layers():
  model = CifarResNet50()
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
  sown = {k: tuple(v[0].shape) for k, v in state["intermediates"].items()}
  assert sown == {"input": (2, 32, 32, 3), "stem": (2, 32, 32, 64),
                  "stage1": (2, 32, 32, 256), "stage2": (2, 16, 16, 512),
                  "stage3": (2, 8, 8, 1024), "stage4": (2, 4, 4, 2048)}
  assert perceptual.lpips_layers(model) == ("stage1", "stage2", "stage3", "stage4")


SHAPE = (2, 16, 16, 3)


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_lpips_layers_are_post_relu(block):
  """The stage outputs are block outputs after ReLU: non-negative, with exact zeros."""
  model = CifarResNet(stage_sizes=(1, 1, 1, 1), width=4, block=block)
  feats = perceptual.model_features_fn(model, _init(model, SHAPE, 2))(uniform(1, SHAPE))
  assert len(feats) == 4
  for f in feats:
    f = np.asarray(f)
    assert np.all(np.isfinite(f)) and f.min() >= 0.0 and f.max() > 0.0
    assert np.mean(f == 0.0) > 0.05  # ReLU zeros


def test_preact_stage_outputs_are_signed():
  """A PreActResNet's stage outputs (residual sums before BN-ReLU) take both signs, which
  is why a self-bounded bound means another set there."""
  preact = get_model("preact_resnet", stage_sizes=(1, 1, 1, 1), width=4)
  feats = perceptual.model_features_fn(preact, _init(preact, SHAPE, 2))(uniform(1, SHAPE))
  assert all(np.asarray(f).min() < 0.0 for f in feats)


def test_train_mode_updates_batch_stats_and_one_channel_input():
  """Fashion-MNIST size (28x28x1, its statistics), the quickstart's small basic variant:
  train=True needs mutable batch_stats and changes them; logits float32."""
  model = get_model("cifar_resnet", stage_sizes=(1, 1, 1, 1), width=4, block="basic",
                    mean=(0.286,), std=(0.353,))
  x = uniform(3, (4, 28, 28, 1))
  variables = _init(model, (1, 28, 28, 1), 4)
  logits, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         upd["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))
  evaluated = model.apply(variables, x, train=False)
  assert np.all(np.isfinite(evaluated)) and not np.allclose(evaluated, logits)
  _, state = model.apply(variables, x, mutable=["intermediates"])
  assert state["intermediates"]["stage4"][0].shape == (4, 4, 4, 32)


def test_pat_configs_use_it():
  """The CIFAR-10 PAT configs build the paper's ResNet-50 (23,520,842 parameters); the
  Fashion-MNIST quickstart a small post-activation one whose LPIPS layers are post-ReLU."""
  for module in (cifar10_pat, cifar10_pat_alexnet):
    config = module.get_config()
    assert config.model == "cifar_resnet"
    model = loop.build_model(config, data_lib.DATASETS[config.dataset])
    assert isinstance(model, CifarResNet) and model.block == "bottleneck"
    assert _count(_param_shapes(model, (1, 32, 32, 3))) == 23_520_842
  config = fashion_mnist_pat.get_config()
  assert config.model == "cifar_resnet" and config.method == "pat"
  model = loop.build_model(config, data_lib.DATASETS[config.dataset])
  assert isinstance(model, CifarResNet)
  assert perceptual.lpips_layers(model) == ("stage1", "stage2", "stage3", "stage4")


@pytest.mark.parametrize("kwargs,name", [
    (dict(block="preact"), "block"), (dict(stage_sizes=(1, 1, 1)), "stage_sizes"),
    (dict(stage_sizes=(1, 0, 1, 1)), "stage_sizes"), (dict(width=0), "width"),
    (dict(width=2.5), "width"), (dict(num_classes=0), "num_classes")])
def test_bad_arguments_raise_named_errors(kwargs, name):
  with pytest.raises(ValueError, match=name):
    CifarResNet(**kwargs)


def test_channel_mismatch_raises():
  model = CifarResNet(stage_sizes=(1, 1, 1, 1), width=4)
  with pytest.raises(ValueError, match="channels"):
    jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
