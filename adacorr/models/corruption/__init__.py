"""Corruption networks (flax.linen image-to-image maps) for AdA and DeepAugment.

Common contract (every net, constructible with no arguments, e.g. `EDSR()`):
  `net.apply(variables, x, train=False) -> image` with `x` (B, H, W, C) float32 in [0, 1],
  C in {1, 3} (the output has the input's channel count), H and W divisible by 4; the
  output has the input's shape and lies in [0, 1].
  `variables['params']` holds every kernel and bias (the blocks AdA perturbs); the VQ-VAE
  also keeps its codebook and EMA statistics in the 'vq_ema' collection (never perturbed).
  `train=True` is the pretraining mode: the CAE then binarises stochastically (rng stream
  'binarize'), and the VQ-VAE updates 'vq_ema' (pass `mutable=['vq_ema', 'losses']`) and
  sows its VQ loss into 'losses'.
  EDSR and CAE also take `hook=fn(point, x, layers) -> x`, called at their named
  distortion points: DeepAugment's activation distortions (`adacorr.augment.deepaugment`)
  use it, so the nets' forward pass exists once.

  EDSR         super-resolution net (Lim et al. 2017); same-size output by super-resolving,
               then downsampling back (a near-identity with trained weights)
  CAE          compressive autoencoder (Theis et al. 2017), as used by DeepAugment
  VQVAE        VQ-VAE (van den Oord et al. 2017) with an EMA codebook
  UNet         small U-Net trained for image completion
  convert_torch  DeepAugment's PyTorch EDSR / CAE state dicts -> our params (needs torch)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from adacorr.models.corruption.cae import CAE
from adacorr.models.corruption.edsr import EDSR, super_resolution_net
from adacorr.models.corruption.unet import UNet
from adacorr.models.corruption.vqvae import VQVAE, VectorQuantizerEMA

CORRUPTION_NETS: dict[str, type[nn.Module]] = {
    "edsr": EDSR,
    "cae": CAE,
    "vqvae": VQVAE,
    "unet": UNet,
}


def get_corruption_net(name: str, **kwargs: Any) -> nn.Module:
  """Builds the corruption net called `name` (one of `CORRUPTION_NETS`).

  Raises:
    ValueError: if `name` is unknown.
  """
  try:
    cls = CORRUPTION_NETS[name]
  except KeyError:
    raise ValueError(
        f"name={name!r} is not a known corruption net; known names: "
        f"{', '.join(sorted(CORRUPTION_NETS))}.") from None
  return cls(**kwargs)


__all__ = ["CAE", "CORRUPTION_NETS", "EDSR", "UNet", "VQVAE", "VectorQuantizerEMA",
           "get_corruption_net", "super_resolution_net"]
