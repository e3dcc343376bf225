"""The bottleneck WRN-50-2 (`adacorr.models.wide_resnet_bottleneck`), RobustAugMix's network.

Parameter counts are recounted here by hand from the layer shapes of torchvision's
`wide_resnet50_2` (conv1x1 / conv3x3 / conv1x1 bottlenecks whose inner width is twice
ResNet-50's, projection shortcuts, BN scale + bias, a dense head with bias), checked
against torchvision's published 68,883,240 for its ImageNet model, and compared with the
flax model's parameters from `jax.eval_shape` (no real init).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import models
from adacorr.models.wide_resnet_bottleneck import WideResNet50_2
from experiments.configs import cifar10_robust_augmix
from flat_init import flat_init, uniform

KEY = jax.random.key(0)


def _hand_count(num_classes, stage_sizes=(3, 4, 6, 3), base=64, width=2, stem_kernel=3,
                in_channels=3):
  """Parameters of torchvision's (wide) bottleneck ResNet, counted from the layer shapes."""
  def conv(k, c_in, c_out):
    return k * k * c_in * c_out  # no bias

  def bn(c):
    return 2 * c  # weight and bias; running statistics are buffers

  total = conv(stem_kernel, in_channels, base) + bn(base)
  c_in = base
  for i, blocks in enumerate(stage_sizes):
    inner, out = width * base * 2**i, 4 * base * 2**i
    for j in range(blocks):
      stride = 2 if i > 0 and j == 0 else 1
      total += conv(1, c_in, inner) + bn(inner)
      total += conv(3, inner, inner) + bn(inner)
      total += conv(1, inner, out) + bn(out)
      if stride != 1 or c_in != out:
        total += conv(1, c_in, out) + bn(out)
      c_in = out
  return total + c_in * num_classes + num_classes


def _num_params(model, shape):
  variables = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def test_hand_count_reproduces_torchvision_wide_resnet50_2():
  # torchvision's documented wide_resnet50_2: 7x7 stem, 1000 classes, 68,883,240.
  assert _hand_count(1000, stem_kernel=7) == 68_883_240
  # and resnet50 (width 1): 25,557,032, our ResNet50's count (tests/test_models.py).
  assert _hand_count(1000, width=1, stem_kernel=7) == 25_557_032


def test_wide_resnet50_2_has_66_847_050_parameters_for_cifar10():
  expected = _hand_count(10)
  assert expected == 66_847_050 == 68_883_240 - (7 * 7 - 3 * 3) * 3 * 64 - 2048 * 990 - 990
  assert _num_params(WideResNet50_2(), (1, 32, 32, 3)) == expected
  # Not a 6n+4 WideResNet: WRN-40-2 has 2,243,546.
  assert _num_params(models.WideResNet(depth=40, width=2), (1, 32, 32, 3)) == 2_243_546


def test_tiny_wide_resnet_shapes_and_counts():
  model = WideResNet50_2(stage_sizes=(1, 2, 1, 1), base_features=4, num_classes=7)
  shape = (2, 16, 16, 3)
  assert _num_params(model, shape) == _hand_count(7, (1, 2, 1, 1), base=4)
  variables = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
  params = variables["params"]
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 4)  # 3x3 stem, stride 1
  block = params["stage2_block1"]  # inner width 2 * 4 * 2 = 16, output 4 * 4 * 2 = 32
  assert block["conv1"]["kernel"].shape == (1, 1, 16, 16)
  assert block["conv2"]["kernel"].shape == (3, 3, 16, 16)
  assert block["conv3"]["kernel"].shape == (1, 1, 16, 32)
  assert block["shortcut_conv"]["kernel"].shape == (1, 1, 16, 32)
  assert "shortcut_conv" not in params["stage2_block2"]
  assert params["head"]["kernel"].shape == (128, 7)
  # One forward pass (train mode) of a flat-initialised tiny model: no max pool, so the
  # stages run at 16, 8, 4, 2.
  variables = flat_init(model, shape, seed=0, bn_bias=0.1)
  x = uniform(1, shape)
  logits, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"]))(variables, x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and float(jnp.std(logits)) > 0
  sown = {k: tuple(v[0].shape) for k, v in state["intermediates"].items()}
  assert sown == {"input": (2, 16, 16, 3), "stem": (2, 16, 16, 4), "stage1": (2, 16, 16, 16),
                  "stage2": (2, 8, 8, 32), "stage3": (2, 4, 4, 64), "stage4": (2, 2, 2, 128)}
  assert set(sown) == set(WideResNet50_2.FEATURE_POINTS)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"],
                         variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # every BN updates its running statistics


def test_registered_and_used_by_the_cifar10_robust_augmix_config():
  assert models.MODELS["wide_resnet50_2"] is WideResNet50_2
  config = cifar10_robust_augmix.get_config()
  assert config.model == "wide_resnet50_2"
  model = models.get_model(config.model, num_classes=10, **config.model_kwargs)
  assert _num_params(model, (1, 32, 32, 3)) == 66_847_050


@pytest.mark.parametrize("kwargs,match", [
    (dict(stage_sizes=(3, 4, 6)), "stage_sizes"),
    (dict(stage_sizes=(3, 0, 6, 3)), "stage_sizes"),
    (dict(base_features=0), "base_features"),
    (dict(width=3), "width"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    WideResNet50_2(**kwargs)
  with pytest.raises(ValueError, match=match):
    models.get_model("wide_resnet50_2", **kwargs)


def test_bad_input_raises_value_error_naming_x():
  with pytest.raises(ValueError, match=r"\bx\b"):
    jax.eval_shape(WideResNet50_2(base_features=4, stage_sizes=(1, 1, 1, 1)).init, KEY,
                   jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32))
