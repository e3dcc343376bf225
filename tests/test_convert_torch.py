"""PyTorch -> flax conversion of DeepAugment's EDSR and CAE (needs torch).

The torch modules below mirror `DeepAugment/EDSR_distort_imagenet.py` (EDSR-PyTorch's
`EDSR` with `common.MeanShift` / `ResBlock` / `Upsampler`, without DeepAugment's random
distortions) and `DeepAugment/CAE_Model/cae_32x32x32_zero_pad_bin.py` (hendrycks/imagenet-r),
so their state-dict keys are the ones of the public weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402  pylint: disable=g-import-not-at-top

from adacorr.models.corruption.cae import CAE  # noqa: E402
from adacorr.models.corruption.convert_torch import (  # noqa: E402
    cae_params_from_torch, edsr_params_from_torch, load_torch_state_dict)
from adacorr.models.corruption.edsr import EDSR, downsample, pixel_shuffle  # noqa: E402

# ------------------------------------------------------------------------------------------
# Reference PyTorch modules.


def default_conv(in_channels, out_channels, kernel_size, bias=True):
  return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                   bias=bias)


class MeanShift(nn.Conv2d):

  def __init__(self, rgb_range, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_std=(1.0, 1.0, 1.0),
               sign=-1):
    super().__init__(3, 3, kernel_size=1)
    std = torch.Tensor(rgb_std)
    self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
    self.bias.data = sign * rgb_range * torch.Tensor(rgb_mean) / std
    for p in self.parameters():
      p.requires_grad = False


class TorchResBlock(nn.Module):

  def __init__(self, conv, n_feats, kernel_size, bias=True, act=nn.ReLU(True), res_scale=1):
    super().__init__()
    m = []
    for i in range(2):
      m.append(conv(n_feats, n_feats, kernel_size, bias=bias))
      if i == 0:
        m.append(act)
    self.body = nn.Sequential(*m)
    self.res_scale = res_scale

  def forward(self, x):
    res = self.body(x).mul(self.res_scale)
    res += x
    return res


class Upsampler(nn.Sequential):

  def __init__(self, conv, scale, n_feats, bias=True):
    m = []
    for _ in range(int(math.log(scale, 2))):
      m.append(conv(n_feats, 4 * n_feats, 3, bias))
      m.append(nn.PixelShuffle(2))
    super().__init__(*m)


class TorchEDSR(nn.Module):

  def __init__(self, n_resblocks=16, n_feats=64, scale=4, res_scale=1, rgb_range=255,
               n_colors=3, conv=default_conv):
    super().__init__()
    kernel_size = 3
    act = nn.ReLU(True)
    self.sub_mean = MeanShift(rgb_range)
    self.add_mean = MeanShift(rgb_range, sign=1)
    self.head = nn.Sequential(conv(n_colors, n_feats, kernel_size))
    m_body = [TorchResBlock(conv, n_feats, kernel_size, act=act, res_scale=res_scale)
              for _ in range(n_resblocks)]
    m_body.append(conv(n_feats, n_feats, kernel_size))
    self.body = nn.Sequential(*m_body)
    self.tail = nn.Sequential(Upsampler(conv, scale, n_feats),
                              conv(n_feats, n_colors, kernel_size))

  def forward(self, x):
    x = self.sub_mean(x)
    x = self.head(x)
    res = self.body(x)
    res += x
    x = self.tail(res)
    return self.add_mean(x)


def _res_block():
  return nn.Sequential(
      nn.ZeroPad2d((1, 1, 1, 1)), nn.Conv2d(128, 128, (3, 3), (1, 1)), nn.LeakyReLU(),
      nn.ZeroPad2d((1, 1, 1, 1)), nn.Conv2d(128, 128, (3, 3), (1, 1)))


class TorchCAE(nn.Module):
  """cae_32x32x32_zero_pad_bin.CAE; `forward(x, rand)` takes the binarisation's uniforms."""

  def __init__(self):
    super().__init__()
    self.e_conv_1 = nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)),
                                  nn.Conv2d(3, 64, (5, 5), (2, 2)), nn.LeakyReLU())
    self.e_conv_2 = nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)),
                                  nn.Conv2d(64, 128, (5, 5), (2, 2)), nn.LeakyReLU())
    self.e_block_1, self.e_block_2, self.e_block_3 = _res_block(), _res_block(), _res_block()
    self.e_conv_3 = nn.Sequential(nn.Conv2d(128, 32, (5, 5), (1, 1), padding=(2, 2)),
                                  nn.Tanh())
    self.d_up_conv_1 = nn.Sequential(
        nn.Conv2d(32, 64, (3, 3), (1, 1)), nn.LeakyReLU(), nn.ZeroPad2d((1, 1, 1, 1)),
        nn.ConvTranspose2d(64, 128, (2, 2), (2, 2)))
    self.d_block_1, self.d_block_2, self.d_block_3 = _res_block(), _res_block(), _res_block()
    self.d_up_conv_2 = nn.Sequential(
        nn.Conv2d(128, 32, (3, 3), (1, 1)), nn.LeakyReLU(), nn.ZeroPad2d((1, 1, 1, 1)),
        nn.ConvTranspose2d(32, 256, (2, 2), (2, 2)))
    self.d_up_conv_3 = nn.Sequential(
        nn.Conv2d(256, 16, (3, 3), (1, 1)), nn.LeakyReLU(), nn.ReflectionPad2d((2, 2, 2, 2)),
        nn.Conv2d(16, 3, (3, 3), (1, 1)), nn.Tanh())

  def encode(self, x):
    ec1 = self.e_conv_1(x)
    ec2 = self.e_conv_2(ec1)
    eblock1 = self.e_block_1(ec2) + ec2
    eblock2 = self.e_block_2(eblock1) + eblock1
    eblock3 = self.e_block_3(eblock2) + eblock2
    return self.e_conv_3(eblock3)

  def forward(self, x, rand):
    ec3 = self.encode(x)
    with torch.no_grad():
      prob = (1 + ec3) / 2
      eps = torch.zeros(ec3.shape)
      eps[rand <= prob] = (1 - ec3)[rand <= prob]
      eps[rand > prob] = (-ec3 - 1)[rand > prob]
    encoded = 0.5 * (ec3 + eps + 1)
    return self.decode(encoded)

  def decode(self, encoded):
    y = encoded * 2.0 - 1
    uc1 = self.d_up_conv_1(y)
    dblock1 = self.d_block_1(uc1) + uc1
    dblock2 = self.d_block_2(dblock1) + dblock1
    dblock3 = self.d_block_3(dblock2) + dblock2
    uc2 = self.d_up_conv_2(dblock3)
    return self.d_up_conv_3(uc2)


# ------------------------------------------------------------------------------------------
# Helpers.


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _state_dict(module):
  return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _torch_edsr_image(net, x):
  """DeepAugment's convention: feed 255 * x, clamp the output to [0, 255], divide by 255."""
  with torch.no_grad():
    return _nhwc(net(255.0 * _nchw(x)).clamp(0, 255) / 255.0)


# ------------------------------------------------------------------------------------------
# Tests.


def test_pixel_shuffle_matches_torch():
  x = _images((2, 3, 5, 12))
  want = _nhwc(nn.PixelShuffle(2)(_nchw(x)))
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 2)), want)


def test_conv_transpose_matches_torch():
  """PyTorch (in, out, kh, kw) -> (kh, kw, out, in) with transpose_kernel=True, no flip."""
  import flax.linen as fnn  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  deconv = nn.ConvTranspose2d(5, 7, (2, 2), (2, 2))
  x = _images((2, 6, 4, 5))
  with torch.no_grad():
    want = _nhwc(deconv(_nchw(x)))
  w = deconv.weight.detach().numpy()
  params = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)),
            "bias": jnp.asarray(deconv.bias.detach().numpy())}
  got = fnn.ConvTranspose(7, (2, 2), strides=(2, 2), padding="VALID",
                          transpose_kernel=True).apply({"params": params}, jnp.asarray(x))
  assert got.shape == want.shape == (2, 12, 8, 7)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("scale, num_blocks, size", [(4, 16, 16), (2, 2, 16)])
def test_edsr_matches_torch(scale, num_blocks, size):
  torch.manual_seed(0)
  tnet = TorchEDSR(n_resblocks=num_blocks, scale=scale).eval()
  params = edsr_params_from_torch(_state_dict(tnet), scale=scale)
  x = _images((2, size, size, 3))
  want = _torch_edsr_image(tnet, x)
  net = EDSR(scale=scale, num_blocks=num_blocks, resample="none")
  got = np.asarray(jax.jit(net.apply)({"params": params}, jnp.asarray(x)))
  assert got.shape == want.shape == (2, size * scale, size * scale, 3)
  assert 0.02 < want.std()  # a non-trivial image, not clipped to a constant
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_edsr_down_then_sr_matches_torch_on_downsampled_input():
  torch.manual_seed(1)
  tnet = TorchEDSR(n_resblocks=2, scale=2).eval()
  params = edsr_params_from_torch(_state_dict(tnet), scale=2)
  x = _images((2, 32, 32, 3))
  want = _torch_edsr_image(tnet, np.asarray(downsample(jnp.asarray(x), 2)))
  got = np.asarray(jax.jit(EDSR(num_blocks=2, resample="down_then_sr").apply)(
      {"params": params}, jnp.asarray(x)))
  assert got.shape == x.shape
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.fixture(scope="module")
def torch_cae():
  torch.manual_seed(0)
  tnet = TorchCAE().eval()
  with torch.no_grad():
    # PyTorch's default init shrinks activations layer by layer (the output would be
    # almost the last bias): scale the kernels up to about He gain for a sharper test,
    # and move the output off the clipping boundary (tanh(.) > 0).
    for name, p in tnet.named_parameters():
      if name.endswith("weight"):
        p.mul_(2.5)
    tnet.d_up_conv_3[3].bias.fill_(0.5)
  return tnet


@pytest.mark.parametrize("size", [32, 28])
def test_cae_matches_torch(torch_cae, size):
  params = cae_params_from_torch(_state_dict(torch_cae))
  x = _images((2, size, size, 3))
  apply = jax.jit(CAE().apply, static_argnames=("train", "mutable"))
  got, state = apply({"params": params}, jnp.asarray(x), train=False,
                     mutable="intermediates")
  got = np.asarray(got)
  with torch.no_grad():
    ec3 = torch_cae.encode(_nchw(x))
    # train=False is the original's binarisation with every uniform equal to 0.5.
    want = _nhwc(torch_cae(_nchw(x), torch.full(ec3.shape, 0.5)).clamp(0, 1))
  np.testing.assert_allclose(np.asarray(state["intermediates"]["ec3"][0]), _nhwc(ec3),
                             atol=1e-4)
  # Same bits on both sides (no sign decided by rounding).
  np.testing.assert_array_equal(np.asarray(state["intermediates"]["code"][0]),
                                np.where(_nhwc(ec3) >= 0, 1.0, -1.0))
  assert got.shape == want.shape == x.shape
  assert 0.05 < want.std() and 0.5 < np.abs(_nhwc(ec3)).mean()
  np.testing.assert_allclose(got, want, atol=1e-4)

  # train=True: the torch decoder on our sampled bits gives our output.
  got_t, state_t = apply({"params": params}, jnp.asarray(x), train=True,
                         rngs={"binarize": jax.random.key(3)}, mutable="intermediates")
  code = np.asarray(state_t["intermediates"]["code"][0])
  with torch.no_grad():
    want_t = _nhwc(torch_cae.decode(_nchw((code + 1) / 2)).clamp(0, 1))
  np.testing.assert_allclose(np.asarray(got_t), want_t, atol=1e-4)


def test_edsr_missing_and_unexpected_keys_raise():
  torch.manual_seed(0)
  sd = _state_dict(TorchEDSR(n_resblocks=1, scale=2))
  bad = dict(sd)
  del bad["tail.1.bias"]
  with pytest.raises(ValueError, match=r"tail\.1\.bias"):
    edsr_params_from_torch(bad, scale=2)
  with pytest.raises(ValueError, match=r"tail\.0\.2\.weight"):  # x2 weights as x4
    edsr_params_from_torch(sd, scale=4)
  bad = dict(sd, extra=torch.zeros(1))
  with pytest.raises(ValueError, match="extra"):
    edsr_params_from_torch(bad, scale=2)


def test_edsr_mean_shift_mismatch_raises():
  torch.manual_seed(0)
  sd = _state_dict(TorchEDSR(n_resblocks=1, scale=2, rgb_range=1))
  with pytest.raises(ValueError, match="sub_mean"):
    edsr_params_from_torch(sd, scale=2)
  edsr_params_from_torch(sd, scale=2, rgb_range=1.0)  # consistent: accepted
  # Without the mean-shift entries the conversion works too.
  edsr_params_from_torch({k: v for k, v in sd.items() if "mean" not in k}, scale=2)


def test_cae_missing_key_raises(torch_cae):
  sd = _state_dict(torch_cae)
  del sd["d_up_conv_1.3.weight"]
  with pytest.raises(ValueError, match=r"d_up_conv_1\.3\.weight"):
    cae_params_from_torch(sd)


def test_load_torch_state_dict_unwraps_and_strips_prefix(tmp_path, torch_cae):
  sd = _state_dict(torch_cae)
  path = tmp_path / "ckpt.pt"
  torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
  loaded = load_torch_state_dict(str(path))
  assert set(loaded) == set(sd)
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in loaded.values())
  np.testing.assert_array_equal(loaded["e_conv_1.1.weight"], sd["e_conv_1.1.weight"].numpy())
  params = cae_params_from_torch(loaded)
  shapes = jax.eval_shape(CAE().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert (jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(shapes))
  for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(shapes)):
    assert got.shape == want.shape
