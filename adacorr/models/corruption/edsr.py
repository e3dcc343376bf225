"""EDSR-baseline super-resolution net (Lim et al. 2017) as an AdA / DeepAugment corruption net.

Layout of `EDSR` in sanghyun-son/EDSR-PyTorch (`src/model/edsr.py`, `common.py`), the
class DeepAugment copies into `DeepAugment/EDSR_distort_imagenet.py`:

  sub_mean   fixed:  y = rgb_range * x - rgb_range * DIV2K_RGB_MEAN     (not a parameter)
  head       conv3x3 C->64
  body_i     i < num_blocks: [conv3x3 64->64, ReLU, conv3x3 64->64] * res_scale + input
  body_conv  conv3x3 64->64; then the global skip: + head output
  upsample_j log2(scale) stages of [conv3x3 64->256, pixel shuffle x2] (no activation)
  tail       conv3x3 64->C
  add_mean   fixed:  out = (y + rgb_range * DIV2K_RGB_MEAN) / rgb_range, clipped to [0, 1]

Every conv is 3x3, stride 1, zero padding 1, with a bias. Parameter count at C=3 with the
defaults: 1,369,859 for scale 2 and 1,517,571 for scale 4 (DeepAugment's public
`edsr_baseline_x4.pt`). The pretrained weights expect pixels in [0, 255]
(`rgb_range=255`; DeepAugment feeds `255 * image` and divides the output by 255) and
the DIV2K mean (0.4488, 0.4371, 0.4040) from `common.MeanShift`; with one channel the
mean of the three is used.

Sizes (`resample`). EDSR is a super-resolver: its body runs at the input's size and its
output is `scale` times larger. AdA and DeepAugment need an image-to-image map of the
input's size whose unperturbed (pretrained) version is close to the identity, so that the
weight perturbations, not the backbone, make the corruption (Calian et al. 2022, Fig. 2:
AdA(EDSR) SSIMs between 0.90 and 1.00 on CIFAR-10, "highly concentrated around 0.99" at
nu = 0.0075). The paper does not say how it maps EDSR's output back to the input size;
the three modes are:
  'sr_then_down' (default): super-resolve the full-resolution image (H -> scale H), then
      resize it back to H with `downsample` (antialiased bicubic). The downsampling is
      the operator EDSR was trained to invert, so with trained x`scale` SR weights
      down(SR(x)) ~ x: the near-identity the paper's SSIMs imply. Costs scale^2 more
      than 'down_then_sr' (the body runs at H, not H / scale).
  'down_then_sr': downsample the input by `scale` first, then super-resolve it back to H:
      the x`scale` super-resolution *task* (what `adacorr.train.corruption_nets`
      pretrains on: `super_resolution_net`), and the closest variant of DeepAugment's
      ImageNet pipeline (resize to 128 px, then the x4 EDSR) at the input's size. Every
      output carries the blur of the down-up resampling even with zero perturbation (a
      tiny Fashion-MNIST EDSR: SSIM 0.80 to the clean image).
  'none': the super-resolved (B, scale H, scale W, C) image (DeepAugment's 128 -> 512).
`downsample` is `jax.image.resize(method="bicubic", antialias=True)`: the Keys
(a = -0.5) cubic kernel widened by the scale factor, i.e. the filter of MATLAB's
`imresize` that produced DIV2K's bicubic low-resolution inputs that EDSR was trained to
invert. (Borders differ slightly: jax renormalises the truncated kernel, MATLAB pads
symmetrically.)

Initialisation mirrors PyTorch's `nn.Conv2d` defaults (kernel and bias uniform in
+-1/sqrt(fan_in)), so randomly initialised nets behave like the original's and every
bias has a non-zero norm (AdA's perturbation radius is relative to it).

Hook points (`EDSR.__call__(..., hook=fn)`, also used by `CAE`): at each named point of
the forward pass the activation x is replaced by `fn(point, x, layers)`, where `layers`
maps the net's top-level parameter names ('head', 'body_0', ..., 'tail') to its bound
layers, so a hook may also run them on other inputs (with the same parameters). The
hook must keep x's shape. This is how `adacorr.augment.deepaugment` applies DeepAugment's
activation distortions inside the nets. EDSR's points, (B, h, w, features) each:
  head     the head conv's output; the result feeds the body and the global skip
  trunk_i  i = 0 .. num_blocks: the body's features before `body_i` (trunk_0: the
           (hooked) head output; trunk_{num_blocks}: the input of body_conv)
  body     body_conv's output, before the global skip adds the head output
Without a hook (the default) the forward is the plain net.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# DIV2K RGB mean of EDSR-PyTorch's `common.MeanShift` (rgb_std is (1, 1, 1)).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SUPPORTED_SCALES = (2, 4)
# `EDSR.resample`: how the output gets the input's size (see the module doc).
RESAMPLE_MODES = ("sr_then_down", "down_then_sr", "none")

# PyTorch's default `nn.Conv2d` / `nn.ConvTranspose2d` kernel init,
# kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)). For flax HWIO conv
# kernels fan_in = kh * kw * in; for a flax `ConvTranspose(transpose_kernel=True)` kernel
# (kh, kw, out, in) it is kh * kw * out, which is also what PyTorch computes for its
# (in, out, kh, kw) transposed-conv weight.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., jnp.ndarray]:
  """PyTorch's default bias init for a layer with `fan_in` inputs: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jnp.ndarray:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_conv(features: int, kernel_size: int, in_features: int, padding: Any = "VALID",
               strides: int = 1, name: str | None = None) -> nn.Conv:
  """A square `nn.Conv` with a bias and PyTorch's default init.

  `in_features` is only used for the bias init bound; `padding` is passed to `nn.Conv`.
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides), padding=padding,
      kernel_init=torch_kernel_init,
      bias_init=torch_bias_init(in_features * kernel_size * kernel_size), name=name)


# `hook(point, x, layers) -> x'` (see the module doc); `layers`: top-level name -> layer.
Layers = Mapping[str, Callable[[jnp.ndarray], jnp.ndarray]]
Hook = Callable[[str, jnp.ndarray, Layers], jnp.ndarray]


def check_hook(hook: Hook | None) -> None:
  """Raises TypeError unless `hook` is None or callable."""
  if hook is not None and not callable(hook):
    raise TypeError(f"hook must be None or a callable hook(point, x, layers), got "
                    f"{type(hook).__name__}.")


def hook_point(hook: Hook | None, point: str, x: jnp.ndarray, layers: Layers) -> jnp.ndarray:
  """The activation at `point`: x itself without a hook, else `hook(point, x, layers)`.

  Raises:
    ValueError: if the hook's result does not have x's shape.
  """
  if hook is None:
    return x
  y = hook(point, x, layers)
  shape = getattr(y, "shape", None)
  if shape != x.shape:
    raise ValueError(f"hook returned shape {shape} at point {point!r}; it must keep the "
                     f"shape {x.shape}.")
  return y


def check_images(x: jnp.ndarray) -> None:
  """Raises ValueError unless `x` is (B, H, W, C), C in {1, 3}, H and W divisible by 4."""
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC batch (B, H, W, C), got shape {x.shape}.")
  if x.shape[-1] not in (1, 3):
    raise ValueError(f"x must have 1 or 3 channels, got shape {x.shape}.")
  if x.shape[1] % 4 or x.shape[2] % 4:
    raise ValueError(f"x must have height and width divisible by 4, got shape {x.shape}.")


def rgb_mean(channels: int) -> jnp.ndarray:
  """The DIV2K mean for `channels` (3: per channel; 1: the mean of the three)."""
  mean = jnp.asarray(DIV2K_RGB_MEAN, jnp.float32)
  return mean if channels == 3 else jnp.mean(mean, keepdims=True)


def pixel_shuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
  """PyTorch `nn.PixelShuffle(r)` in NHWC: (B, H, W, C*r*r) -> (B, H*r, W*r, C).

  Input channel `c * r * r + i * r + j` goes to output pixel (h * r + i, w * r + j),
  channel c (`(c r1 r2) h w -> c (h r1) (w r2)`, c the slowest).
  """
  b, h, w, ch = x.shape
  if ch % (r * r):
    raise ValueError(f"x has {ch} channels, not divisible by r*r = {r * r}.")
  c = ch // (r * r)
  x = x.reshape(b, h, w, c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, c
  return x.reshape(b, h * r, w * r, c)


def downsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Antialiased bicubic downsampling (B, H, W, C) -> (B, H/factor, W/factor, C)."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h // factor, w // factor, c), method="bicubic",
                          antialias=True)


class ResBlock(nn.Module):
  """EDSR residual block: conv3x3 -> ReLU -> conv3x3, times `res_scale`, plus the input.

  (B, H, W, features) -> same shape. Submodules `conv1`, `conv2` (PyTorch `body.0`,
  `body.2`).
  """
  features: int = 64
  res_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    f = self.features
    res = torch_conv(f, 3, f, padding=1, name="conv1")(x)
    res = nn.relu(res)
    res = torch_conv(f, 3, f, padding=1, name="conv2")(res)
    return res * self.res_scale + x


class EDSR(nn.Module):
  """EDSR-baseline; x (B, H, W, C) in [0, 1] -> (B, H, W, C) in [0, 1] (see module doc).

  Attributes:
    scale: super-resolution factor, 2 or 4 (one or two conv + pixel-shuffle stages).
    num_blocks: number of residual blocks.
    features: width of the trunk.
    res_scale: residual scaling inside each block.
    resample: 'sr_then_down' (default: super-resolve, then downsample back to H; a
      near-identity with trained weights), 'down_then_sr' (downsample, then
      super-resolve: the SR task) or 'none' (return the (B, scale*H, scale*W, C) image);
      see the module doc.
    rgb_range: pixel range the weights expect (255 for the public EDSR weights).
  `train` is accepted for the common interface and ignored (no dropout / batch norm).
  `hook`: optional `hook(point, x, layers)` applied at the points 'head', 'trunk_0' ..
  'trunk_{num_blocks}', 'body' (see the module doc); None: the plain forward.
  Parameters: `head`, `body_0` .. `body_{num_blocks-1}` (each `conv1`, `conv2`),
  `body_conv`, `upsample_0` [, `upsample_1`], `tail`; each with `kernel` and `bias`.
  """
  scale: int = 2
  num_blocks: int = 16
  features: int = 64
  res_scale: float = 1.0
  resample: str = "sr_then_down"
  rgb_range: float = 255.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, *,
               hook: Hook | None = None) -> jnp.ndarray:
    del train
    check_images(x)
    check_hook(hook)
    if self.scale not in SUPPORTED_SCALES:
      raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}.")
    if self.resample not in RESAMPLE_MODES:
      raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {self.resample!r}.")
    x = x.astype(jnp.float32)
    channels = x.shape[-1]
    f = self.features
    n = self.num_blocks
    stages = int(math.log2(self.scale))
    layers = {
        "head": torch_conv(f, 3, channels, padding=1, name="head"),
        **{f"body_{i}": ResBlock(f, self.res_scale, name=f"body_{i}") for i in range(n)},
        "body_conv": torch_conv(f, 3, f, padding=1, name="body_conv"),
        **{f"upsample_{j}": torch_conv(4 * f, 3, f, padding=1, name=f"upsample_{j}")
           for j in range(stages)},
        "tail": torch_conv(channels, 3, f, padding=1, name="tail"),
    }

    def point(name, v):
      return hook_point(hook, name, v, layers)

    if self.resample == "down_then_sr":
      x = downsample(x, self.scale)
    shift = self.rgb_range * rgb_mean(channels)

    h = x * self.rgb_range - shift  # sub_mean(rgb_range * x)
    h = point("head", layers["head"](h))
    res = h
    for i in range(n):
      res = layers[f"body_{i}"](point(f"trunk_{i}", res))
    res = point("body", layers["body_conv"](point(f"trunk_{n}", res)))
    res = res + h
    for j in range(stages):
      res = pixel_shuffle(layers[f"upsample_{j}"](res), 2)
    y = layers["tail"](res)
    y = (y + shift) / self.rgb_range  # add_mean, back to [0, 1]
    if self.resample == "sr_then_down":
      y = downsample(y, self.scale)
    return jnp.clip(y, 0.0, 1.0)


def super_resolution_net(net: nn.Module) -> nn.Module:
  """The net that pretraining fits: for an `EDSR`, the same net (same parameters) in
  'down_then_sr' mode, whose `net(x) ~ x` objective is x`scale` super-resolution of the
  data; any other module is returned unchanged."""
  if isinstance(net, EDSR) and net.resample != "down_then_sr":
    return net.clone(resample="down_then_sr")
  return net
