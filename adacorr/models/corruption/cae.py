"""Compressive autoencoder (Theis et al. 2017) as used by DeepAugment.

Layer for layer `CAE` of `DeepAugment/CAE_Model/cae_32x32x32_zero_pad_bin.py`
(hendrycks/imagenet-r; a copy of alexandru-dinu/cae `models/cae_32x32x32_zero_pad_bin.py`
plus DeepAugment's random latent distortions, which `adacorr.augment.deepaugment`
applies through the hook points below):

  e_conv_1   zero-pad (left 1, right 2, top 1, bottom 2), conv5x5 s2 C->64, LeakyReLU
  e_conv_2   same, 64->128
  e_block_k  k = 1..3: [zero-pad 1, conv3x3 128->128, LeakyReLU, zero-pad 1, conv3x3] + input
  e_conv_3   conv5x5 pad 2 128->32, tanh                    -> ec3 in [-1, 1], (H/4, W/4, 32)
  binarise   b in {-1, +1}; encoded bits = (b + 1) / 2 in {0, 1}; decoder input 2*bits - 1
  d_up_conv_1  conv3x3 valid 32->64, LeakyReLU, zero-pad 1, transposed conv2x2 s2 64->128
  d_block_k  k = 1..3, as e_block_k
  d_up_conv_2  conv3x3 valid 128->32, LeakyReLU, zero-pad 1, transposed conv2x2 s2 32->256
  d_up_conv_3  conv3x3 valid 256->16, LeakyReLU, reflection-pad 2, conv3x3 16->C, tanh

LeakyReLU has PyTorch's default slope 0.01; all pads are zero pads except the reflection
pad before the last conv. 2,241,859 parameters at C=3; H and W divisible by 4 (32x32 and
28x28 both map back to their own size).

Scaling: the original is trained on pixels in [0, 1] with an MSE loss against the tanh
output, and DeepAugment feeds `ToTensor()` images in [0, 1] and clamps the output to
[0, 1]; so the input is used as is and the output is `clip(tanh(.), 0, 1)`.

Binarisation (the original's `eps` trick): b = +1 with probability (1 + ec3) / 2, else -1,
computed without gradient, so the decoder input (b in value) has the straight-through
gradient 1 w.r.t. ec3; here `b + (ec3 - stop_gradient(ec3))`, exactly +-1. `train=True` samples b with the 'binarize' rng
stream (`b = +1 iff u <= (1 + ec3) / 2`, u ~ U[0, 1), exactly the original's test).
`train=False` is deterministic: b = +1 iff ec3 >= 0 (the more likely value; the same as
the original with u fixed at 0.5), still with the straight-through gradient so that
perturbations of encoder weights get gradients (AdA). (DeepAugment itself binarises
stochastically even in `eval()` mode.)

Hook points (`CAE.__call__(..., hook=fn)`, as for `EDSR`: x at a point is replaced by
`fn(point, x, layers)`, `layers` the bound top-level layers by parameter name):
  ec3   the tanh code (B, H/4, W/4, 32) before binarisation
  code  the decoder input (B, H/4, W/4, 32), +-1 without a hook
`adacorr.augment.deepaugment` distorts the latent through them.

Transposed convs are `nn.ConvTranspose(transpose_kernel=True)` with kernels
(kh, kw, out, in): PyTorch's `ConvTranspose2d` weight (in, out, kh, kw) transposed by
(2, 3, 1, 0), no flip. Initialisation mirrors PyTorch's defaults (see `edsr.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.models.corruption.edsr import (Hook, check_hook, check_images, hook_point,
                                            torch_bias_init, torch_conv, torch_kernel_init)

LEAKY_SLOPE = 0.01  # PyTorch nn.LeakyReLU() default
LATENT_CHANNELS = 32


def _leaky(x: jnp.ndarray) -> jnp.ndarray:
  return nn.leaky_relu(x, LEAKY_SLOPE)


def _pad(x: jnp.ndarray, width: int, mode: str = "constant") -> jnp.ndarray:
  """Pads H and W of an NHWC batch by `width` on every side (zeros or 'reflect')."""
  return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0)), mode=mode)


def binarize(ec3: jnp.ndarray, key: jax.Array | None) -> jnp.ndarray:
  """{-1, +1} code of ec3 in [-1, 1] with a straight-through gradient (see module doc).

  `key=None` is deterministic (+1 iff ec3 >= 0); otherwise +1 with probability
  (1 + ec3) / 2. The value is exactly +-1 (the original's `2 * (0.5 * (ec3 + eps + 1)) - 1`
  equals it up to rounding); the gradient w.r.t. ec3 is the identity.
  """
  prob = (1.0 + ec3) / 2.0
  if key is None:
    u = jnp.full_like(ec3, 0.5)
  else:
    u = jax.random.uniform(key, ec3.shape, ec3.dtype)
  bits = jnp.where(u <= prob, 1.0, -1.0).astype(ec3.dtype)
  return bits + (ec3 - jax.lax.stop_gradient(ec3))


class ResBlock(nn.Module):
  """[zero-pad 1, conv3x3, LeakyReLU, zero-pad 1, conv3x3] + input; (B, h, w, 128) kept.

  Submodules `conv_1`, `conv_2` (PyTorch `.1`, `.4`).
  """
  features: int = 128

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    f = self.features
    h = torch_conv(f, 3, f, padding=1, name="conv_1")(x)
    h = _leaky(h)
    h = torch_conv(f, 3, f, padding=1, name="conv_2")(h)
    return h + x


class UpConv(nn.Module):
  """conv3x3 valid -> LeakyReLU -> zero-pad 1 -> transposed conv2x2 stride 2.

  (B, h, w, c) -> (B, 2h, 2w, out_features). Submodules `conv` (PyTorch `.0`) and
  `deconv` (PyTorch `.3`).
  """
  mid_features: int
  out_features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = torch_conv(self.mid_features, 3, x.shape[-1], name="conv")(x)
    h = _pad(_leaky(h), 1)
    return nn.ConvTranspose(
        self.out_features, (2, 2), strides=(2, 2), padding="VALID", transpose_kernel=True,
        kernel_init=torch_kernel_init, bias_init=torch_bias_init(self.out_features * 4),
        name="deconv")(h)


class OutConv(nn.Module):
  """conv3x3 valid 256->16, LeakyReLU, reflection-pad 2, conv3x3 16->C, tanh, clip to [0, 1].

  (B, h, w, 256) -> (B, h, w, channels). Submodules `conv_1`, `conv_2` (PyTorch `.0`,
  `.3`).
  """
  channels: int = 3
  mid_features: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = torch_conv(self.mid_features, 3, x.shape[-1], name="conv_1")(x)
    h = _pad(_leaky(h), 2, mode="reflect")
    h = torch_conv(self.channels, 3, self.mid_features, name="conv_2")(h)
    return jnp.clip(jnp.tanh(h), 0.0, 1.0)


class CAE(nn.Module):
  """Compressive autoencoder; x (B, H, W, C) in [0, 1] -> same shape in [0, 1].

  `train=True` binarises stochastically (needs a 'binarize' rng); `train=False` is
  deterministic. The tanh code ec3 (B, H/4, W/4, 32) and the decoder input in {-1, +1}
  are sown as `intermediates/ec3` and `intermediates/code` when that collection is
  mutable (after the hook, if any). `hook`: optional `hook(point, x, layers)` at the
  points 'ec3' and 'code' (see the module doc). Parameters: `e_conv_1`, `e_conv_2`,
  `e_block_{1,2,3}` (`conv_1`, `conv_2`), `e_conv_3`, `d_up_conv_1` (`conv`, `deconv`),
  `d_block_{1,2,3}`, `d_up_conv_2` (`conv`, `deconv`), `d_up_conv_3` (`conv_1`,
  `conv_2`); each `kernel` and `bias`.

  `features`: the trunk's width (the residual blocks'); the other layers keep the
  original's ratios to it (64 = features / 2, 256 = 2 features, 32 and 16 = features / 4
  and / 8 in the decoder; the 32-channel code is kept). 128 (default) is DeepAugment's CAE,
  the only width its published weights fit; smaller nets (e.g. 32: ~1/16 of the
  parameters) suit CPU budgets (configs/corruption_nets/fashion_mnist_cae_small.py; 16 in
  fashion_mnist_cae_tiny.py).
  """
  features: int = 128

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, *,
               hook: Hook | None = None) -> jnp.ndarray:
    check_images(x)
    check_hook(hook)
    x = x.astype(jnp.float32)
    channels = x.shape[-1]
    f = self.features
    if not isinstance(f, int) or f < 8 or f % 8:
      raise ValueError(f"features={f!r} must be a positive multiple of 8 (128: the original).")
    layers = {
        "e_conv_1": torch_conv(f // 2, 5, channels, padding=((1, 2), (1, 2)), strides=2,
                               name="e_conv_1"),
        "e_conv_2": torch_conv(f, 5, f // 2, padding=((1, 2), (1, 2)), strides=2,
                               name="e_conv_2"),
        **{f"e_block_{k}": ResBlock(f, name=f"e_block_{k}") for k in (1, 2, 3)},
        "e_conv_3": torch_conv(LATENT_CHANNELS, 5, f, padding=2, name="e_conv_3"),
        "d_up_conv_1": UpConv(f // 2, f, name="d_up_conv_1"),
        **{f"d_block_{k}": ResBlock(f, name=f"d_block_{k}") for k in (1, 2, 3)},
        "d_up_conv_2": UpConv(f // 4, 2 * f, name="d_up_conv_2"),
        "d_up_conv_3": OutConv(channels, mid_features=f // 8, name="d_up_conv_3"),
    }
    # Encoder.
    h = _leaky(layers["e_conv_1"](x))
    h = _leaky(layers["e_conv_2"](h))
    for k in (1, 2, 3):
      h = layers[f"e_block_{k}"](h)
    ec3 = hook_point(hook, "ec3", jnp.tanh(layers["e_conv_3"](h)), layers)
    self.sow("intermediates", "ec3", ec3)
    # Binarisation.
    code = binarize(ec3, self.make_rng("binarize") if train else None)
    code = hook_point(hook, "code", code, layers)
    self.sow("intermediates", "code", code)
    # Decoder.
    h = layers["d_up_conv_1"](code)
    for k in (1, 2, 3):
      h = layers[f"d_block_{k}"](h)
    h = layers["d_up_conv_2"](h)
    return layers["d_up_conv_3"](h)
