"""Tests for the EDSR and CAE corruption nets (adacorr/models/corruption/{edsr,cae}.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import dm_pix as pix
import numpy as np
import pytest

from adacorr.models.corruption.cae import CAE
from adacorr.models.corruption.edsr import (EDSR, downsample, pixel_shuffle,
                                            super_resolution_net, torch_bias_init,
                                            torch_kernel_init)


def _param_shapes(net, x_shape):
  """The init variables' shapes, via `jax.eval_shape` (no FLOPs, no compilation)."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  return jax.eval_shape(lambda x: net.init(jax.random.key(0), x), x)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _random_params(net, x_shape, seed=0):
  """Random params with PyTorch-like scales, drawn with NumPy (fast: no jax RNG compiles).

  For the CAE the output conv's bias is set to 0.5 so the output is not clipped away.
  """
  shapes = _param_shapes(net, x_shape)["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) == 4 else 64
    bound = 1.0 / np.sqrt(fan_in)
    value = rng.uniform(-bound, bound, s.shape).astype(np.float32)
    if "d_up_conv_3" in name and "conv_2" in name and "bias" in name:
      value = np.full(s.shape, 0.5, np.float32)
    return jnp.asarray(value)

  return {"params": jax.tree_util.tree_map_with_path(draw, shapes)}


def _apply(net, variables, x, **kwargs):
  """`net.apply` under `jax.jit` (compiling the whole net is faster than eager dispatch)."""
  return jax.jit(net.apply, static_argnames=("train", "mutable"))(variables, x, **kwargs)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32))


@pytest.mark.parametrize("net, expected", [
    (EDSR(), 1_369_859),
    (EDSR(scale=4), 1_517_571),
    (CAE(), 2_241_859),
    # features=32, by hand: e_conv_1 1,216 + e_conv_2 12,832 + 2 x 3 blocks x 9,248 (twice)
    # + e_conv_3 25,632 + d_up_conv_1 6,704 + d_up_conv_2 4,424 + d_up_conv_3 2,419.
    (CAE(features=32), 164_203),
])
def test_parameter_counts(net, expected):
  variables = _param_shapes(net, (1, 32, 32, 3))
  assert set(variables) == {"params"}
  assert _count(variables["params"]) == expected


def test_edsr_param_names_cover_every_layer():
  params = _param_shapes(EDSR(scale=4), (1, 32, 32, 3))["params"]
  names = set(params)
  assert names == ({"head", "body_conv", "upsample_0", "upsample_1", "tail"}
                   | {f"body_{i}" for i in range(16)})
  assert params["upsample_0"]["kernel"].shape == (3, 3, 64, 256)
  assert params["body_3"]["conv2"]["bias"].shape == (64,)


def test_cae_param_names_and_shapes():
  params = _param_shapes(CAE(), (1, 32, 32, 3))["params"]
  assert params["e_conv_1"]["kernel"].shape == (5, 5, 3, 64)
  assert params["e_conv_3"]["kernel"].shape == (5, 5, 128, 32)
  # nn.ConvTranspose(transpose_kernel=True): (kh, kw, out, in).
  assert params["d_up_conv_1"]["deconv"]["kernel"].shape == (2, 2, 128, 64)
  assert params["d_up_conv_2"]["deconv"]["kernel"].shape == (2, 2, 256, 32)
  assert params["d_up_conv_3"]["conv_2"]["kernel"].shape == (3, 3, 16, 3)


def test_cae_width_keeps_the_ratios_and_the_code():
  params = _param_shapes(CAE(features=32), (1, 28, 28, 1))["params"]
  assert params["e_conv_1"]["kernel"].shape == (5, 5, 1, 16)
  assert params["e_block_2"]["conv_1"]["kernel"].shape == (3, 3, 32, 32)
  assert params["e_conv_3"]["kernel"].shape == (5, 5, 32, 32)  # the 32-channel code
  assert params["d_up_conv_2"]["deconv"]["kernel"].shape == (2, 2, 64, 8)
  assert params["d_up_conv_3"]["conv_2"]["kernel"].shape == (3, 3, 4, 1)
  with pytest.raises(ValueError, match="features=12"):
    _param_shapes(CAE(features=12), (1, 28, 28, 1))


def test_init_is_pytorch_style():
  """Kernels and biases are U(+-1/sqrt(fan_in)); in particular biases are non-zero."""
  fan_in = 9 * 64
  key = jax.random.key(0)
  for value in (torch_kernel_init(key, (3, 3, 64, 64)), torch_bias_init(fan_in)(key, (64,))):
    value = np.asarray(value)
    assert np.all(np.abs(value) <= 1 / np.sqrt(fan_in) + 1e-7)
    assert np.std(value) > 0.4 / np.sqrt(fan_in)  # uniform: std = bound / sqrt(3)


@pytest.mark.parametrize("make_net", [EDSR, lambda: EDSR(scale=4), CAE],
                         ids=["edsr_x2", "edsr_x4", "cae"])
@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 3)])
def test_output_shape_and_range(make_net, shape):
  net = make_net()
  variables = _random_params(net, shape)
  x = _images(shape)
  y = _apply(net, variables, x, train=False)
  assert y.shape == x.shape and y.dtype == jnp.float32
  y = np.asarray(y)
  assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
  assert y.std() > 0  # not everything clipped to one value


@pytest.mark.parametrize("scale", [2, 4])
def test_edsr_resample_none_super_resolves(scale):
  net = EDSR(scale=scale, num_blocks=2, resample="none")
  x = _images((2, 16, 16, 3))
  y = _apply(net, _random_params(net, x.shape), x)
  assert y.shape == (2, 16 * scale, 16 * scale, 3)


def test_edsr_down_then_sr_is_downsample_then_super_resolve():
  x = _images((2, 32, 32, 3))
  same = EDSR(num_blocks=2, resample="down_then_sr")
  variables = _random_params(same, x.shape)
  small = downsample(x, 2)
  assert small.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(
      same.apply(variables, x),
      EDSR(num_blocks=2, resample="none").apply(variables, small), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_edsr_default_is_super_resolve_then_downsample(scale):
  x = _images((2, 16, 16, 3))
  net = EDSR(scale=scale, num_blocks=2)
  assert net.resample == "sr_then_down"
  variables = _random_params(net, x.shape)
  big = EDSR(scale=scale, num_blocks=2, resample="none").apply(variables, x)
  np.testing.assert_allclose(net.apply(variables, x),
                             np.clip(downsample(big, scale), 0, 1), atol=1e-6)


def _nearest_upsampling_edsr_params(net, channels):
  """Hand-set EDSR weights that make the super-resolver a nearest-neighbour upsampler:
  zero residual blocks, head = identity (one feature per channel), every pixel-shuffle
  stage copies each feature to its 4 sub-pixels, tail = identity. Then SR(x) is x
  repeated scale x scale, whose antialiased downsampling is ~x (smooth images), while
  downsampling first loses the detail."""
  shapes = _param_shapes(net, (1, 16, 16, channels))["params"]
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  f = net.features
  eye = jnp.zeros((3, 3, channels, f)).at[1, 1, jnp.arange(channels), jnp.arange(channels)].set(1)
  params["head"]["kernel"] = eye
  up = jnp.zeros((3, 3, f, 4 * f))
  for c in range(f):  # output channel c * 4 + k of the shuffle is sub-pixel k of feature c
    up = up.at[1, 1, c, 4 * c:4 * c + 4].set(1.0)
  for j in range(int(np.log2(net.scale))):
    params[f"upsample_{j}"]["kernel"] = up
  params["tail"]["kernel"] = jnp.swapaxes(eye, 2, 3)
  return params


def test_edsr_sr_then_down_is_near_identity_with_sr_weights():
  """The issue's construction: with weights that super-resolve, 'sr_then_down' gives
  back (almost) the clean image, 'down_then_sr' a blurred one."""
  net = EDSR(scale=2, num_blocks=1, features=4)
  params = _nearest_upsampling_edsr_params(net, 1)
  yy, xx = np.mgrid[0:16, 0:16] / 16.0
  x = jnp.asarray((0.5 + 0.4 * np.sin(6 * xx) * np.cos(5 * yy))[None, :, :, None], jnp.float32)
  near = net.apply({"params": params}, x)
  blurred = net.clone(resample="down_then_sr").apply({"params": params}, x)
  near_ssim, blurred_ssim = float(pix.ssim(near, x)[0]), float(pix.ssim(blurred, x)[0])
  assert near_ssim > 0.99, near_ssim
  assert blurred_ssim < near_ssim - 0.02, (near_ssim, blurred_ssim)


def test_edsr_rejects_unknown_resample():
  with pytest.raises(ValueError, match="resample"):
    _param_shapes(EDSR(num_blocks=1, resample="same"), (1, 8, 8, 1))


def test_super_resolution_net_is_the_down_then_sr_edsr():
  assert super_resolution_net(EDSR()).resample == "down_then_sr"
  assert super_resolution_net(EDSR(num_blocks=3)).num_blocks == 3
  cae = CAE()
  assert super_resolution_net(cae) is cae


def test_downsample_keeps_constants():
  x = jnp.full((1, 16, 16, 3), 0.3)
  np.testing.assert_allclose(downsample(x, 4), 0.3, atol=1e-6)


@pytest.mark.parametrize("r, c", [(2, 3), (2, 1), (3, 2)])
def test_pixel_shuffle_matches_torch_order(r, c):
  """torch.nn.PixelShuffle: out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w]."""
  b, h, w = 2, 3, 4
  x = np.random.default_rng(0).normal(size=(b, h, w, c * r * r)).astype(np.float32)
  want = np.zeros((b, h * r, w * r, c), np.float32)
  for ci in range(c):
    for i in range(r):
      for j in range(r):
        want[:, i::r, j::r, ci] = x[..., ci * r * r + i * r + j]
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), r)), want)


@pytest.mark.parametrize("net", [EDSR(num_blocks=1), CAE()], ids=["edsr", "cae"])
@pytest.mark.parametrize("shape", [(32, 32, 3), (2, 1, 32, 32, 3), (2, 30, 32, 3),
                                   (2, 32, 30, 3), (2, 32, 32, 2)])
def test_bad_input_raises(net, shape):
  with pytest.raises(ValueError, match="x"):
    net.init(jax.random.key(0), jnp.zeros(shape))


def test_edsr_bad_scale_raises():
  with pytest.raises(ValueError, match="scale"):
    EDSR(scale=3, num_blocks=1).init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))


_cae_apply = jax.jit(CAE().apply, static_argnames=("train", "mutable"))


def _cae_run(variables, x, train, key=None):
  rngs = {"binarize": key} if key is not None else None
  y, state = _cae_apply(variables, x, train=train, rngs=rngs, mutable="intermediates")
  return np.asarray(y), state["intermediates"]


def test_cae_stochastic_binarisation_in_train_mode():
  x = _images((2, 16, 16, 3))
  variables = _random_params(CAE(), x.shape)
  k1, k2 = jax.random.key(1), jax.random.key(2)
  y1, s1 = _cae_run(variables, x, True, k1)
  y1b, s1b = _cae_run(variables, x, True, k1)
  y2, s2 = _cae_run(variables, x, True, k2)
  code1, code2 = np.asarray(s1["code"][0]), np.asarray(s2["code"][0])
  assert code1.shape == (2, 4, 4, 32)
  assert set(np.unique(code1)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(y1, y1b)
  np.testing.assert_array_equal(code1, np.asarray(s1b["code"][0]))
  assert np.any(code1 != code2)
  assert np.any(y1 != y2)
  # Frequency of +1 follows (1 + ec3) / 2 (checked on the mean over the code).
  ec3 = np.asarray(s1["ec3"][0])
  codes = np.stack([np.asarray(_cae_run(variables, x, True, jax.random.key(k))[1]["code"][0])
                    for k in range(10, 30)])
  assert abs((codes == 1).mean() - ((1 + ec3) / 2).mean()) < 0.03


def test_cae_eval_mode_is_deterministic_threshold():
  x = _images((2, 28, 28, 1))
  variables = _random_params(CAE(), x.shape)
  y1, s1 = _cae_run(variables, x, False)
  y2, _ = _cae_run(variables, x, False)
  np.testing.assert_array_equal(y1, y2)
  ec3 = np.asarray(s1["ec3"][0])
  assert ec3.shape == (2, 7, 7, 32)
  np.testing.assert_array_equal(np.asarray(s1["code"][0]), np.where(ec3 >= 0, 1.0, -1.0))
  # Without a mutable 'intermediates' the net returns only the image.
  y3 = _apply(CAE(), variables, x)
  np.testing.assert_array_equal(np.asarray(y3), y1)


def test_cae_straight_through_gradient_reaches_encoder():
  x = _images((1, 16, 16, 3))
  variables = _random_params(CAE(), x.shape)

  def loss(params):
    return jnp.sum(CAE().apply({"params": params}, x) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert float(jnp.abs(grads["e_conv_1"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["d_up_conv_1"]["deconv"]["kernel"]).max()) > 0


# --- hook points (what adacorr.augment.deepaugment distorts) ------------------------------

def _hook(record, change=None):
  """A hook that records every call (point, x) and returns x, or -x at the point `change`.

  At each point it also runs the net's own layers through `layers` on the previous
  point's activation (recorded as (point, 'layer', value)), eagerly: the bound layers
  only live inside `apply`.
  """
  def hook(point, x, layers):
    if record and point.startswith("trunk_") and point != "trunk_0":
      i = int(point.split("_")[1]) - 1
      record.append((point, "layer", layers[f"body_{i}"](record[-1][2])))
    if point == "body":
      record.append((point, "layer", layers["body_conv"](record[-1][2])))
    record.append((point, "x", x))
    return -x if point == change else x
  return hook


def test_edsr_hook_sees_every_point_and_the_identity_hook_is_the_plain_net():
  net = EDSR(features=4, num_blocks=2)
  x = _images((2, 8, 8, 3))
  variables = _random_params(net, x.shape)
  plain = np.asarray(net.apply(variables, x))
  record = []
  np.testing.assert_array_equal(np.asarray(net.apply(variables, x, hook=_hook(record))), plain)
  points = ["head", "trunk_0", "trunk_1", "trunk_2", "body"]
  assert [p for p, kind, _ in record if kind == "x"] == points
  assert all(v.shape == (2, 8, 8, 4) for _, _, v in record)  # the full-size 8x8 input
  # `layers` are the net's own layers: body_i of trunk_i is trunk_{i+1}, and body_conv of
  # trunk_2 is the 'body' point.
  for point, kind, value in record:
    if kind == "layer":
      x_at = next(v for p, k, v in record if p == point and k == "x")
      np.testing.assert_allclose(value, x_at, rtol=1e-6, atol=1e-6)
  for point in points:  # every point feeds the output
    changed = np.asarray(net.apply(variables, x, hook=_hook([], change=point)))
    assert np.mean((changed - plain) ** 2) > 1e-6, point


def test_cae_hook_points_and_sown_values():
  net = CAE()
  x = _images((2, 16, 16, 3))
  variables = _random_params(net, x.shape)
  plain, state = net.apply(variables, x, mutable="intermediates")
  seen = []

  def identity(point, v, layers):
    seen.append((point, v.shape, set(layers)))
    return v

  np.testing.assert_array_equal(net.apply(variables, x, hook=identity), plain)
  assert [(p, s) for p, s, _ in seen] == [("ec3", (2, 4, 4, 32)), ("code", (2, 4, 4, 32))]
  assert seen[0][2] == set(variables["params"])
  for point in ("ec3", "code"):
    y, hooked = net.apply(variables, x, mutable="intermediates",
                          hook=lambda p, v, _, point=point: -v if p == point else v)
    # (a random PyTorch-scaled CAE's output hardly depends on its code: small changes)
    assert np.max(np.abs(np.asarray(y) - np.asarray(plain))) > 1e-4, point
    # The sown values are the hooked ones; a negated ec3 gives the negated code.
    np.testing.assert_array_equal(hooked["intermediates"]["code"][0],
                                  -state["intermediates"]["code"][0])


@pytest.mark.parametrize("net, shape", [(EDSR(features=4, num_blocks=1), (1, 8, 8, 3)),
                                        (CAE(), (1, 16, 16, 3))], ids=["edsr", "cae"])
def test_bad_hooks_raise(net, shape):
  x = jnp.zeros(shape)
  variables = _random_params(net, shape)
  with pytest.raises(TypeError, match="hook"):
    net.apply(variables, x, hook=3)
  with pytest.raises(ValueError, match="hook returned shape"):
    net.apply(variables, x, hook=lambda point, v, layers: v[..., :1])
