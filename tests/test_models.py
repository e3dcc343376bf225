"""Tests for adacorr.models: shapes, parameter counts, BatchNorm, normalisation, marked points."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import models
from adacorr.models import (
    CifarAlexNet, PreActResNet18, PreActResNet50, ResNet50, SmallCNN, WideResNet, get_model)

KEY = jax.random.key(0)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


def _num_params(model, shape):
  variables = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _variables(model, x, seed=0):
  """Variables with the structure of `model.init(KEY, x)`: He-normal kernels (numpy),
  small random biases, BN scale 1 / bias 0 / mean 0 / var 1, zero perturbations.

  Cheaper than `model.init`, which on CPU compiles one sampler per parameter shape.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, KEY, x)

  def fill(path, a):
    name = jax.tree_util.keystr(path)
    if "perturbations" in name or "mean" in name:
      return jnp.zeros(a.shape, a.dtype)
    if "var" in name or "scale" in name:
      return jnp.ones(a.shape, a.dtype)
    if "kernel" in name:
      std = np.sqrt(2 / np.prod(a.shape[:-1]))
    else:
      std = 0.1
    return jnp.asarray(rng.normal(0, std, a.shape).astype(np.float32))

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _state(variables):
  """The variables without 'perturbations'."""
  return {k: v for k, v in variables.items() if k != "perturbations"}


# Every number below was counted with `sum(p.numel() for p in model.parameters())` on an
# independent PyTorch build (torch 2.13.0, a scratch script outside this repo); BN
# scale + bias count, running statistics do not.
PARAM_COUNTS = [
    # kuangliu/pytorch-cifar PreActResNet18 plus the final BN(512) of the pre-activation
    # design (locuslab/fast_adversarial, tml-epfl/adv-training-corruptions (RLAT)).
    # kuangliu's file has no final BN: 11,171,146 = 11,172,170 - 2 * 512.
    ("preact18", PreActResNet18(), (1, 32, 32, 3), 11_172_170),
    # kuangliu PreActResNet50 (PreActBottleneck [3,4,6,3], 3x3 stem) plus final BN(2048);
    # without it: 23,509,066.
    ("preact50", PreActResNet50(), (1, 32, 32, 3), 23_513_162),
    # xternalz/WideResNet-pytorch WideResNet(28, 10) / (40, 2) (RobustBench layout).
    ("wrn28_10", WideResNet(depth=28, width=10), (1, 32, 32, 3), 36_479_194),
    ("wrn40_2", WideResNet(depth=40, width=2), (1, 32, 32, 3), 2_243_546),
    # torchvision resnet50 layout, 1000 classes.
    ("resnet50", ResNet50(), (1, 224, 224, 3), 25_557_032),
    # cassidylaidlaw/perceptual-advex CifarAlexNet(num_classes=10), 32x32 input.
    ("cifar_alexnet", CifarAlexNet(), (1, 32, 32, 3), 23_272_266),
]


@pytest.mark.parametrize("name,model,shape,expected", PARAM_COUNTS,
                         ids=[c[0] for c in PARAM_COUNTS])
def test_parameter_counts_match_pytorch_references(name, model, shape, expected):
  assert _num_params(model, shape) == expected


@pytest.mark.parametrize("model,shape,num_classes", [
    (PreActResNet18(num_classes=7), (2, 32, 32, 3), 7),
    (PreActResNet50(num_classes=100), (2, 32, 32, 3), 100),
    (WideResNet(depth=16, width=2, num_classes=10), (2, 32, 32, 3), 10),
    (ResNet50(num_classes=10), (2, 64, 64, 3), 10),
    (CifarAlexNet(num_classes=10), (2, 32, 32, 3), 10),
    (SmallCNN(mean=(0.5,) * 3, std=(0.25,) * 3), (2, 32, 32, 3), 10),
], ids=["preact18", "preact50", "wrn", "resnet50", "alexnet", "smallcnn_rgb"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_output_shape_and_dtype(model, shape, num_classes, dtype):
  model = model.clone(dtype=dtype)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  logits = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (shape[0], num_classes)
  assert logits.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


def test_preact_resnet18_forward_and_intermediates():
  model = PreActResNet18()
  x = _images((2, 32, 32, 3))
  logits, state = model.apply(_state(_variables(model, x)), x, mutable=["intermediates"])
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and np.std(logits) > 0
  inter = {k: v[0].shape for k, v in state["intermediates"].items()}
  assert set(inter) == set(PreActResNet18.FEATURE_POINTS)
  assert inter == {
      "input": (2, 32, 32, 3), "stem": (2, 32, 32, 64), "stage1": (2, 32, 32, 64),
      "stage2": (2, 16, 16, 128), "stage3": (2, 8, 8, 256), "stage4": (2, 4, 4, 512)}


@pytest.mark.parametrize("model,shape,expected", [
    (PreActResNet50(), (2, 32, 32, 3),
     {"input": (2, 32, 32, 3), "stem": (2, 32, 32, 64), "stage1": (2, 32, 32, 256),
      "stage2": (2, 16, 16, 512), "stage3": (2, 8, 8, 1024), "stage4": (2, 4, 4, 2048)}),
    (WideResNet(depth=16, width=4), (2, 32, 32, 3),
     {"input": (2, 32, 32, 3), "stem": (2, 32, 32, 16), "stage1": (2, 32, 32, 64),
      "stage2": (2, 16, 16, 128), "stage3": (2, 8, 8, 256)}),
    (ResNet50(), (2, 224, 224, 3),
     {"input": (2, 224, 224, 3), "stem": (2, 112, 112, 64), "stage1": (2, 56, 56, 256),
      "stage2": (2, 28, 28, 512), "stage3": (2, 14, 14, 1024), "stage4": (2, 7, 7, 2048)}),
    (CifarAlexNet(), (2, 32, 32, 3),
     {"conv1": (2, 16, 16, 64), "conv2": (2, 8, 8, 192), "conv3": (2, 4, 4, 384),
      "conv4": (2, 4, 4, 256), "conv5": (2, 4, 4, 256)}),
], ids=["preact50", "wrn", "resnet50", "alexnet"])
def test_marked_points_shapes(model, shape, expected):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
  sown = {k: tuple(v[0].shape) for k, v in state["intermediates"].items()}
  assert set(sown) == set(type(model).FEATURE_POINTS)
  assert sown == expected
  if "perturbations" in variables:  # ResNet family: one perturbation per marked point.
    assert _shapes(dict(variables["perturbations"])) == expected
  else:
    assert isinstance(model, CifarAlexNet)


# ---- perturbation points are wired to the activations they name ----

def _small_preact():
  return PreActResNet18(width=8)


def _cross_entropy(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))


@pytest.fixture(scope="module")
def small_preact_setup():
  model = _small_preact()
  x = _images((2, 32, 32, 3))
  variables = _variables(model, x)
  # A train-mode pass so the running BN statistics are not trivial.
  state = _state(variables)
  _, upd = model.apply(state, _images((4, 32, 32, 3), 1), train=True, mutable=["batch_stats"])
  state = {"params": state["params"], "batch_stats": upd["batch_stats"]}
  return model, state, variables["perturbations"], x, jnp.array([3, 7])


def test_perturb_is_noop_without_perturbations(small_preact_setup):
  model, state, perts, x, _ = small_preact_setup
  assert set(perts) == set(model.FEATURE_POINTS)
  assert "perturbations" not in state
  plain = model.apply(state, x)
  zeros = model.apply({**state, "perturbations": perts}, x)
  np.testing.assert_array_equal(plain, zeros)


@pytest.mark.parametrize("point", _small_preact().FEATURE_POINTS)
def test_nonzero_perturbation_changes_output(small_preact_setup, point):
  model, state, perts, x, _ = small_preact_setup
  plain = model.apply(state, x)
  perts = dict(perts)
  perts[point] = 0.5 * jax.random.normal(jax.random.key(1), perts[point].shape)
  out = model.apply({**state, "perturbations": perts}, x)
  assert np.max(np.abs(out - plain)) > 1e-3


def test_perturbation_gradients_equal_activation_gradients(small_preact_setup):
  """d loss / d perturbations[p] equals d loss / d (activation p), the latter found
  independently by adding a delta to the output of the producing submodule."""
  model, state, perts, x, labels = small_preact_setup
  producers = {"stem": "stem_conv", "stage1": "stage1_block2", "stage2": "stage2_block2",
               "stage3": "stage3_block2", "stage4": "stage4_block2"}

  def loss_via_perturb(perts):
    return _cross_entropy(model.apply({**state, "perturbations": perts}, x), labels)

  def loss_via_intercept(deltas, x):
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and context.module.name in deltas:
        out = out + deltas[context.module.name]
      return out
    with nn.intercept_methods(add_delta):
      return _cross_entropy(model.apply(state, x), labels)

  grads = jax.jit(jax.grad(loss_via_perturb))(perts)
  deltas = {module: jnp.zeros_like(perts[point]) for point, module in producers.items()}
  delta_grads, x_grad = jax.jit(jax.grad(loss_via_intercept, argnums=(0, 1)))(deltas, x)
  for point, module in producers.items():
    assert np.max(np.abs(grads[point])) > 0
    np.testing.assert_allclose(grads[point], delta_grads[module], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(grads["input"], x_grad, rtol=1e-4, atol=1e-7)


def test_sown_stem_is_the_stem_conv_output(small_preact_setup):
  model, state, _, x, _ = small_preact_setup
  _, inter = model.apply(state, x, mutable=["intermediates"])
  stem_conv = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
  expected = stem_conv.apply({"params": state["params"]["stem_conv"]},
                             models.normalize(x, models.CIFAR10_MEAN, models.CIFAR10_STD))
  np.testing.assert_allclose(inter["intermediates"]["stem"][0], expected, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(inter["intermediates"]["input"][0], x)


# ---- normalisation, BatchNorm, dtype, dropout ----

def test_normalisation_happens_inside():
  mean, std = (0.3, 0.5, 0.7), (0.2, 0.3, 0.4)
  model = SmallCNN(features=(4, 8), dense=16, mean=mean, std=std)
  identity = model.clone(mean=(0.0,) * 3, std=(1.0,) * 3)
  x = _images((2, 16, 16, 3))
  variables = _variables(model, x)
  manual = (x - jnp.array(mean)) / jnp.array(std)
  np.testing.assert_allclose(model.apply(variables, x), identity.apply(variables, manual),
                             rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(model.apply(variables, x) - identity.apply(variables, x))) > 1e-3


@pytest.fixture(scope="module")
def tiny_cnn():
  """A tiny SmallCNN with variables from a real `init` (shared: init compiles slowly)."""
  model = SmallCNN(features=(4, 8), dense=16)
  return model, model.init(KEY, _images((2, 28, 28, 1)))


def test_init_collections_and_dtypes(tiny_cnn):
  model, variables = tiny_cnn
  assert set(variables) == {"params", "batch_stats"}
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  bn = variables["batch_stats"]["BatchNorm_0"]
  np.testing.assert_array_equal(bn["mean"], 0.0)
  np.testing.assert_array_equal(bn["var"], 1.0)
  np.testing.assert_array_equal(variables["params"]["head"]["bias"], 0.0)
  assert "bias" not in variables["params"]["Conv_0"]  # conv followed by BN: no bias.
  kernel = variables["params"]["Conv_1"]["kernel"]  # (3, 3, 4, 8): fan_out = 72.
  assert 0.5 < np.std(kernel) / np.sqrt(2 / 72) < 1.5


def test_batchnorm_train_updates_stats_with_pytorch_momentum(tiny_cnn):
  model, variables = tiny_cnn
  x = _images((8, 28, 28, 1))
  np.testing.assert_array_equal(variables["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
  _, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
  conv1 = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), use_bias=False).apply(
      {"params": variables["params"]["Conv_0"]},
      models.normalize(x, models.FASHION_MNIST_MEAN, models.FASHION_MNIST_STD))
  # running = 0.9 * running + 0.1 * batch statistic (running mean starts at 0, var at 1).
  np.testing.assert_allclose(upd["batch_stats"]["BatchNorm_0"]["mean"],
                             0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["BatchNorm_0"]["var"],
                             0.9 + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  # Eval mode must not touch the statistics and must not need them mutable.
  _, same = model.apply(variables, x, mutable=["batch_stats"])
  for a, b in zip(jax.tree.leaves(same["batch_stats"]),
                  jax.tree.leaves(variables["batch_stats"])):
    np.testing.assert_array_equal(a, b)


def test_batchnorm_eval_uses_running_averages(tiny_cnn):
  model, variables = tiny_cnn
  x = _images((4, 28, 28, 1))
  other = _images((4, 28, 28, 1), seed=5)
  _, upd = model.apply(variables, other, train=True, mutable=["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
  # Eval: an example's logits do not depend on the rest of the batch ...
  batch = jnp.concatenate([x[:1], other[:3]])
  np.testing.assert_allclose(model.apply(variables, x)[0], model.apply(variables, batch)[0],
                             rtol=1e-5, atol=1e-5)
  # ... but do depend on the running statistics.
  zeroed = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  assert np.max(np.abs(model.apply(variables, x)
                       - model.apply({**variables, "batch_stats": zeroed}, x))) > 1e-3
  # Train: an example's logits depend on the batch it is in.
  train_logits = lambda b: model.apply(variables, b, train=True, mutable=["batch_stats"])[0]
  assert np.max(np.abs(train_logits(x)[0] - train_logits(batch)[0])) > 1e-3


def test_bfloat16_computes_in_bfloat16_with_float32_params_and_logits(tiny_cnn):
  model, variables = tiny_cnn
  model = model.clone(dtype=jnp.bfloat16)
  x = _images((2, 28, 28, 1))
  logits, inter = model.apply(variables, x, mutable=["intermediates"])
  assert logits.dtype == jnp.float32
  assert inter["intermediates"]["conv2"][0].dtype == jnp.bfloat16
  f32 = model.clone(dtype=jnp.float32).apply(variables, x)
  assert np.max(np.abs(logits - f32)) > 0  # really computed differently ...
  np.testing.assert_allclose(logits, f32, rtol=0.05, atol=0.05)  # ... but close.
  preact = PreActResNet18(width=8, dtype=jnp.bfloat16)
  y = _images((2, 32, 32, 3))
  logits, inter = preact.apply(_state(_variables(preact, y)), y, mutable=["intermediates"])
  assert logits.dtype == jnp.float32
  assert inter["intermediates"]["stem"][0].dtype == jnp.bfloat16
  assert inter["intermediates"]["stage4"][0].dtype == jnp.bfloat16


def test_dropout_only_in_training():
  model = WideResNet(depth=10, width=1, dropout_rate=0.5)
  x = _images((2, 32, 32, 3))
  variables = _state(_variables(model, x))
  run = lambda key: model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})[0]
  assert np.max(np.abs(run(jax.random.key(1)) - run(jax.random.key(2)))) > 1e-4
  with pytest.raises(Exception, match="dropout"):
    model.apply(variables, x, train=True, mutable=["batch_stats"])
  # Without dropout the train-mode pass is deterministic and needs no rng.
  no_dropout = model.clone(dropout_rate=0.0)
  train = lambda: no_dropout.apply(variables, x, train=True, mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(train(), train())
  # Eval mode ignores dropout entirely.
  np.testing.assert_allclose(model.apply(variables, x), no_dropout.apply(variables, x),
                             rtol=1e-6, atol=1e-6)


def test_alexnet_flattens_channel_major_like_pytorch():
  model = CifarAlexNet()
  x = _images((2, 32, 32, 3))
  variables = _variables(model, x)
  logits, inter = model.apply(variables, x, mutable=["intermediates"])
  p = variables["params"]
  conv5 = inter["intermediates"]["conv5"][0]
  pooled = nn.max_pool(conv5, (2, 2), strides=(2, 2))            # (B, 2, 2, 256)
  flat = jnp.transpose(pooled, (0, 3, 1, 2)).reshape(2, 1024)     # PyTorch (C, H, W) order
  h = jax.nn.relu(flat @ p["fc1"]["kernel"] + p["fc1"]["bias"])
  h = jax.nn.relu(h @ p["fc2"]["kernel"] + p["fc2"]["bias"])
  np.testing.assert_allclose(logits, h @ p["head"]["kernel"] + p["head"]["bias"],
                             rtol=1e-4, atol=1e-4)


def test_small_cnn_forward_on_fashion_mnist_shape(tiny_cnn):
  x = _images((3, 28, 28, 1))
  for model, variables in (tiny_cnn, (SmallCNN(), _variables(SmallCNN(), x))):
    logits, inter = model.apply(variables, x, mutable=["intermediates"])
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits)) and np.std(logits) > 0
    sown = {k: v[0].shape for k, v in inter["intermediates"].items()}
    assert sown == {"conv1": (3, 28, 28, model.features[0]),
                    "conv2": (3, 14, 14, model.features[1])}


# ---- argument checking and the factory ----

@pytest.mark.parametrize("model,shape", [
    (SmallCNN(features=(4,), dense=8), (28, 28, 1)),           # rank 3
    (SmallCNN(features=(4,), dense=8), (2, 28, 28, 3)),        # 3 channels, 1-channel stats
    (PreActResNet18(width=8), (2, 32, 32, 1)),                 # 1 channel, 3-channel stats
    (CifarAlexNet(), (2, 32, 32)),                             # rank 3
    (WideResNet(depth=10, width=1), (2, 32, 32, 1, 1)),        # rank 5
], ids=["small_rank3", "small_channels", "preact_channels", "alexnet_rank3", "wrn_rank5"])
def test_bad_inputs_raise_value_error_naming_x(model, shape):
  with pytest.raises(ValueError, match=r"\bx\b"):
    jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("depth", [27, 4, 30])
def test_invalid_wide_resnet_depth(depth):
  with pytest.raises(ValueError, match="depth"):
    WideResNet(depth=depth, width=2)
  with pytest.raises(ValueError, match="depth"):
    get_model("wide_resnet", depth=depth)


def test_get_model_builds_each_class_with_kwargs():
  expected = {"preact_resnet18": PreActResNet18, "preact_resnet50": PreActResNet50,
              "wide_resnet": WideResNet, "resnet50": ResNet50,
              "cifar_alexnet": CifarAlexNet, "small_cnn": SmallCNN}
  for name, cls in expected.items():
    model = get_model(name, num_classes=5)
    assert type(model) is cls and model.num_classes == 5
  wrn = get_model("wide_resnet", depth=40, width=2)
  assert (wrn.depth, wrn.width) == (40, 2)


def test_get_model_unknown_name():
  with pytest.raises(ValueError, match="name") as err:
    get_model("resnet18")
  assert "'resnet18'" in str(err.value) and "preact_resnet18" in str(err.value)


def test_defaults_follow_the_contract():
  for cls in (PreActResNet18, PreActResNet50, WideResNet, CifarAlexNet):
    model = cls()
    assert model.mean == (0.4914, 0.4822, 0.4465) and model.std == (0.2470, 0.2435, 0.2616)
    assert model.num_classes == 10 and model.dtype == jnp.float32
  assert ResNet50().mean == (0.485, 0.456, 0.406) and ResNet50().num_classes == 1000
  assert len(SmallCNN().mean) == 1
