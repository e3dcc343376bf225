"""Pieces shared by the classifiers: dataset statistics, normalisation, layer defaults.

Every classifier takes NHWC float32 images in [0, 1] and normalises them itself,
so attacks and corruptions work in pixel space.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# Default normalisation statistics (the models take the dataset's own as `mean`/`std`;
# `adacorr.data.DATASETS` holds the same numbers, and a test checks they agree).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

# He/Kaiming normal with fan_out, as in the flax ImageNet example and torchvision.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(train: bool, dtype: Dtype = jnp.float32, **kwargs: Any) -> nn.BatchNorm:
  """A `nn.BatchNorm` with PyTorch's defaults; batch statistics when `train`.

  Statistics live in the `batch_stats` collection. No `axis_name`: under `jax.jit`
  with a batch-sharded input, the batch mean is already over the global batch.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
      dtype=dtype, **kwargs)


def conv(features: int, kernel_size: int, strides: int = 1, padding: Any = None,
         use_bias: bool = False, dtype: Dtype = jnp.float32, **kwargs: Any) -> nn.Conv:
  """A square `nn.Conv` with PyTorch-style symmetric padding `kernel_size // 2` by default.

  Explicit padding (not "SAME") so strided convolutions pad like PyTorch's
  `padding=k // 2`; this matters for loading converted weights.
  """
  pad = kernel_size // 2 if padding is None else padding
  if isinstance(pad, int):
    pad = ((pad, pad), (pad, pad))
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides), padding=pad,
      use_bias=use_bias, dtype=dtype, kernel_init=conv_kernel_init, **kwargs)


def normalize(x: jnp.ndarray, mean: Sequence[float], std: Sequence[float],
              dtype: Dtype = jnp.float32) -> jnp.ndarray:
  """Checks an image batch and returns `(x - mean) / std` cast to `dtype`.

  Args:
    x: images, shape (B, H, W, C), values in [0, 1].
    mean, std: per-channel statistics, each of length C.
    dtype: dtype of the result (the model's computation dtype).

  Returns:
    Normalised images, shape (B, H, W, C), dtype `dtype`.

  Raises:
    ValueError: if `x` is not rank 4, or its channel count differs from the length
      of `mean` / `std`.
  """
  if len(mean) != len(std):
    raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}.")
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC batch (B, H, W, C), got shape {x.shape}.")
  if x.shape[-1] != len(mean):
    raise ValueError(
        f"x has {x.shape[-1]} channels (shape {x.shape}) but mean/std have "
        f"{len(mean)} entries; pass mean/std that match the data.")
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((x.astype(jnp.float32) - mean) / std).astype(dtype)


def mark(module: nn.Module, name: str, x: jnp.ndarray) -> jnp.ndarray:
  """A marked point: `module.perturb(name, x)`, then sows the result as `intermediates/name`.

  `perturb` adds the `perturbations/name` variable when that collection is passed to
  `apply` (the gradient w.r.t. it is the gradient w.r.t. this activation) and is a
  no-op otherwise.
  """
  x = module.perturb(name, x)
  module.sow("intermediates", name, x)
  return x
