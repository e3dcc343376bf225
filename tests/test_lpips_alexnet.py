"""ImageNet AlexNet and its LPIPS (Laidlaw et al. / Zhang et al.) against PyTorch references.

The torch AlexNet below is built by hand with torchvision's module indices (torchvision
is not installed), so its state-dict keys are those of `alexnet-owt-7be5be79.pth`; the
LPIPS reference follows `lpips.LPIPS(net='alex', version='0.1')` (richzhang/
PerceptualSimilarity): ScalingLayer on 2x - 1, features after each conv+ReLU, unit
normalisation over channels (eps 1e-10), squared differences, 1x1 conv with the lin
weights, spatial mean, sum over layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.models import MODELS, AlexNet, get_model
from adacorr.models.alexnet import adaptive_avg_pool
from adacorr.perceptual import (
    alexnet_lpips_features_fn, alexnet_params_from_torch, load_alexnet_lpips,
    lpips_distance, lpips_linear_weights_from_torch, weighted_lpips_distance)

KEY = jax.random.PRNGKey(0)
RELU_IDX = (1, 4, 7, 9, 11)  # torchvision `features` indices of the five ReLUs
CHANNELS = (64, 192, 384, 256, 256)


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_parameter_count_matches_torchvision():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(AlexNet().init, KEY, x)
  assert set(variables) == {"params"}
  assert _num_params(variables) == 61_100_840
  trunk = jax.eval_shape(AlexNet(features_only=True).init, KEY, x)
  assert _num_params(trunk) == 2_469_696


def test_registered_and_defaults():
  assert MODELS["alexnet"] is AlexNet
  model = get_model("alexnet", num_classes=5)
  assert type(model) is AlexNet and model.num_classes == 5
  model = AlexNet()
  assert model.num_classes == 1000 and model.dropout_rate == 0.5
  assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("size,expected", [
    (224, {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13}),
    (64, {"conv1": 15, "conv2": 7, "conv3": 3, "conv4": 3, "conv5": 3}),
])
def test_sown_shapes(size, expected):
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  model = AlexNet(num_classes=7)
  variables = jax.eval_shape(model.init, KEY, x)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  sown = {k: v[0].shape for k, v in state["intermediates"].items()}
  assert sown == {f"conv{i + 1}": (2, s, s, c)
                  for i, (s, c) in enumerate(zip(expected.values(), CHANNELS))}


def test_too_small_input_raises():
  x = jax.ShapeDtypeStruct((1, 62, 62, 3), jnp.float32)
  with pytest.raises(ValueError, match="63x63"):
    jax.eval_shape(AlexNet().init, KEY, x)
  # The trunk alone (lpips) works down to 31 px.
  x = jax.ShapeDtypeStruct((1, 31, 31, 3), jnp.float32)
  out = jax.eval_shape(AlexNet(features_only=True).init_with_output, KEY, x)[0]
  assert out.shape == (1, 1, 1, 256)


def test_load_without_weights_warns_and_gives_a_random_trunk():
  with pytest.warns(UserWarning, match="randomly initialised"):
    fn, w = load_alexnet_lpips()
  assert w is None
  shapes = [f.shape for f in jax.eval_shape(fn, jax.ShapeDtypeStruct((2, 31, 31, 3),
                                                                     jnp.float32))]
  assert shapes == [(2, 7, 7, 64), (2, 3, 3, 192)] + [(2, 1, 1, c) for c in CHANNELS[2:]]
  with pytest.raises(ValueError, match="torch_weights"):
    load_alexnet_lpips(42)


# ------------------------------------------------------------------------------------------
# PyTorch references (skipped without torch; the tests above do not need it).

try:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # noqa: N812  pylint: disable=g-import-not-at-top
except ImportError:  # the tests below are skipped
  torch = F = None
requires_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def _lpips_scaling(x):
  """lpips v0.1: [0, 1] -> [-1, 1], then ScalingLayer (x - shift) / scale (NCHW)."""
  shift = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
  scale = torch.tensor([.458, .448, .450])[None, :, None, None]
  return (2 * x - 1 - shift) / scale


def _torch_alexnet(num_classes):
  """torchvision.models.AlexNet's modules (same indices, hence the same state-dict keys)."""
  tnn = torch.nn
  net = tnn.Module()
  net.features = tnn.Sequential(
      tnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), tnn.ReLU(inplace=True),
      tnn.MaxPool2d(kernel_size=3, stride=2),
      tnn.Conv2d(64, 192, kernel_size=5, padding=2), tnn.ReLU(inplace=True),
      tnn.MaxPool2d(kernel_size=3, stride=2),
      tnn.Conv2d(192, 384, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
      tnn.Conv2d(384, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
      tnn.Conv2d(256, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
      tnn.MaxPool2d(kernel_size=3, stride=2))
  net.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
  net.classifier = tnn.Sequential(
      tnn.Dropout(p=0.5), tnn.Linear(256 * 6 * 6, 4096), tnn.ReLU(inplace=True),
      tnn.Dropout(p=0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True),
      tnn.Linear(4096, num_classes))
  return net.eval()


def _torch_logits(net, x):
  return net.classifier(torch.flatten(net.avgpool(net.features(x)), 1))


def _relu_features(net, x):
  """The five conv+ReLU maps (NCHW), as lpips' `pretrained_networks.alexnet` slices."""
  out = []
  for i, layer in enumerate(net.features):
    x = layer(x)
    if i in RELU_IDX:
      out.append(x.clone())
    if i == RELU_IDX[-1]:
      return out


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _imagenet(x):
  mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
  std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
  return (x - mean) / std


def _torch_zhang_lpips(net, lins, x1, x2):
  """lpips.LPIPS(net='alex', version='0.1')(x1, x2, normalize=True) for NCHW x in [0, 1]."""
  def normalize_tensor(f, eps=1e-10):
    norm = torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True))
    return f / (norm + eps)
  val = 0.0
  for f1, f2, lin in zip(_relu_features(net, _lpips_scaling(x1)),
                         _relu_features(net, _lpips_scaling(x2)), lins):
    diff = (normalize_tensor(f1) - normalize_tensor(f2)) ** 2
    val = val + F.conv2d(diff, lin).mean(dim=(2, 3), keepdim=True)
  return val.reshape(-1).numpy()


def _close(ours, theirs, rtol=1e-4):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


@pytest.fixture(scope="module")
def torch_setup():
  torch.manual_seed(0)
  net = _torch_alexnet(num_classes=10)
  # lpips' NetLinLayer: Sequential(Dropout, Conv2d(C, 1, 1, bias=False)), non-negative.
  lin_sd = {f"lin{l}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1
            for l, c in enumerate(CHANNELS)}
  sd = net.state_dict()
  variables = alexnet_params_from_torch(sd)
  return net, sd, lin_sd, variables


def _images(seed, shape):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, jnp.float32)


@requires_torch
@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 8, 13])
def test_adaptive_avg_pool_matches_torch(n):
  x = np.random.default_rng(n).normal(size=(2, n, n + 3, 4)).astype(np.float32)
  ours = adaptive_avg_pool(jnp.asarray(x), (6, 6))
  theirs = _nhwc(F.adaptive_avg_pool2d(_nchw(x), (6, 6)))
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-6)


@requires_torch
def test_params_match_torchvision_shapes(torch_setup):
  _, _, _, variables = torch_setup
  ref = jax.eval_shape(AlexNet(num_classes=10).init, KEY,
                       jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert (jax.tree_util.tree_map(lambda a: a.shape, variables)
          == jax.tree_util.tree_map(lambda a: a.shape, ref))


@requires_torch
@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 100, 80, 3)])
def test_features_and_logits_match_torch(torch_setup, shape):
  net, _, _, variables = torch_setup
  x = _images(1, shape)
  model = AlexNet(num_classes=10)
  logits, state = jax.jit(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]))(variables, x)
  with torch.no_grad():
    xt = _imagenet(_nchw(x))
    feats_t = _relu_features(net, xt)
    logits_t = _torch_logits(net, xt).numpy()
  _close(logits, logits_t)
  for i, ft in enumerate(feats_t):
    _close(state["intermediates"][f"conv{i + 1}"][0], _nhwc(ft))
  # The LPIPS features_fn (trunk only) gives the same maps.
  feats = jax.jit(alexnet_lpips_features_fn(variables))(x)
  for f, ft in zip(feats, feats_t):
    _close(f, _nhwc(ft))


@requires_torch
def test_zhang_lpips_matches_torch(torch_setup):
  net, _, lin_sd, variables = torch_setup
  x1 = _images(2, (3, 64, 64, 3))
  x2 = jnp.clip(x1 + 0.1 * jax.random.normal(jax.random.PRNGKey(3), x1.shape), 0.0, 1.0)
  w = lpips_linear_weights_from_torch(lin_sd)
  assert [a.shape for a in w] == [(c,) for c in CHANNELS]
  fn = alexnet_lpips_features_fn(variables, lpips_input_scaling=True)
  d = jax.jit(lambda a, b: weighted_lpips_distance(fn, a, b, w))(x1, x2)
  with torch.no_grad():
    feats_t = _relu_features(net, _lpips_scaling(_nchw(x1)))
    want = _torch_zhang_lpips(net, [lin_sd[f"lin{l}.model.1.weight"] for l in range(5)],
                              _nchw(x1), _nchw(x2))
  for f, ft in zip(jax.jit(fn)(x1), feats_t):
    _close(f, _nhwc(ft))
  assert d.shape == (3,) and np.all(want > 0)
  _close(np.square(d), want)
  # The ImageNet normalisation (PAT) equals the lpips scaling up to float rounding.
  fn_pat = alexnet_lpips_features_fn(variables)
  d_pat = jax.jit(lambda a, b: weighted_lpips_distance(fn_pat, a, b, w))(x1, x2)
  _close(d_pat, d)


@requires_torch
def test_laidlaw_distance_matches_numpy(torch_setup):
  net, _, _, variables = torch_setup
  x1 = _images(4, (2, 64, 64, 3))
  x2 = _images(5, (2, 64, 64, 3))
  fn = alexnet_lpips_features_fn(variables)
  d = jax.jit(lambda a, b: lpips_distance(fn, a, b))(x1, x2)
  d_w = jax.jit(lambda a, b: weighted_lpips_distance(fn, a, b))(x1, x2)
  with torch.no_grad():
    f1 = [_nhwc(f).astype(np.float64) for f in _relu_features(net, _imagenet(_nchw(x1)))]
    f2 = [_nhwc(f).astype(np.float64) for f in _relu_features(net, _imagenet(_nchw(x2)))]
  sq = 0.0
  for a, b in zip(f1, f2):
    a = a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-10)
    b = b / (np.linalg.norm(b, axis=-1, keepdims=True) + 1e-10)
    sq = sq + np.mean(np.sum((a - b) ** 2, axis=-1), axis=(1, 2))
  _close(d, np.sqrt(sq))
  _close(d_w, d, rtol=1e-6)


@requires_torch
def test_load_from_files_lpips_naming(torch_setup, tmp_path):
  net, sd, lin_sd, variables = torch_setup
  # A whole `lpips.LPIPS(net='alex')` state dict: trunk under net.slice{k}.{i}, lins,
  # scaling buffers.
  slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
  lpips_sd = {f"net.slice{k}.{i}.{t}": sd[f"features.{i}.{t}"]
              for i, k in slices.items() for t in ("weight", "bias")}
  lpips_sd.update(lin_sd)
  lpips_sd["scaling_layer.shift"] = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
  lpips_sd["scaling_layer.scale"] = torch.tensor([.458, .448, .450])[None, :, None, None]
  trunk_path, lin_path = tmp_path / "lpips_alex_full.pth", tmp_path / "alex.pth"
  torch.save(lpips_sd, trunk_path)
  torch.save(lin_sd, lin_path)
  fn, w = load_alexnet_lpips(str(trunk_path), lin_path)
  assert len(w) == 5
  converted = alexnet_params_from_torch(lpips_sd)
  assert set(converted["params"]) == {f"Conv_{i}" for i in range(5)}
  for name in converted["params"]:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(converted["params"][name][leaf],
                                    variables["params"][name][leaf])
  x1 = _images(6, (2, 48, 48, 3))
  x2 = _images(7, (2, 48, 48, 3))
  d = jax.jit(lambda a, b: weighted_lpips_distance(fn, a, b, w))(x1, x2)
  with torch.no_grad():
    want = _torch_zhang_lpips(net, [lin_sd[f"lin{l}.model.1.weight"] for l in range(5)],
                              _nchw(x1), _nchw(x2))
  _close(np.square(d), want)
  # torchvision naming, no lpips weights (PAT's unweighted LPIPS); the classifier is dropped.
  fn0, w0 = load_alexnet_lpips(sd)
  assert w0 is None
  shapes = [f.shape for f in jax.eval_shape(fn0, x1)]
  assert shapes == [(2, s, s, c) for s, c in zip((11, 5, 2, 2, 2), CHANNELS)]


@requires_torch
def test_missing_and_unexpected_keys_raise(torch_setup):
  _, sd, lin_sd, _ = torch_setup
  bad = dict(sd)
  del bad["features.3.bias"]
  with pytest.raises(ValueError, match=r"features\.3\.bias"):
    alexnet_params_from_torch(bad)
  bad = dict(sd, **{"features.12.weight": sd["features.10.weight"]})
  with pytest.raises(ValueError, match=r"features\.12\.weight"):
    alexnet_params_from_torch(bad)
  bad = dict(sd)
  del bad["classifier.4.weight"]
  with pytest.raises(ValueError, match=r"classifier\.4\.weight"):
    alexnet_params_from_torch(bad)
  # classifier=False drops the classifier; the trunk is still complete.
  assert "fc2" not in alexnet_params_from_torch(bad, classifier=False)["params"]
  with pytest.raises(ValueError, match=r"features\.0\.weight"):
    alexnet_params_from_torch(dict(sd, **{"features.0.weight": torch.zeros(64, 3, 5, 5)}))
  bad = dict(lin_sd)
  del bad["lin2.model.1.weight"]
  with pytest.raises(ValueError, match=r"lin2\.model\.1\.weight"):
    lpips_linear_weights_from_torch(bad)
  with pytest.raises(ValueError, match=r"lin5\.model\.1\.weight"):
    lpips_linear_weights_from_torch(dict(lin_sd, **{"lin5.model.1.weight": torch.ones(1)}))
  with pytest.raises(ValueError, match=r"lin0\.model\.1\.weight.*negative"):
    lpips_linear_weights_from_torch(
        dict(lin_sd, **{"lin0.model.1.weight": -torch.ones(1, 64, 1, 1)}))
  with pytest.raises(ValueError, match="torch_weights"):
    load_alexnet_lpips("/nonexistent/alexnet.pth")
